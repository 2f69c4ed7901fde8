"""Compile bnlab's Triton kernels for a GPU target without a GPU (Triton's ahead-of-time path, with
the ptxas its wheel ships): catches what the interpreter lets through, e.g. an operation the GPU
compiler rejects. Run in a process without TRITON_INTERPRET (tests/test_triton_compile.py):

    python tests/triton_aot.py [--all]

One variant of each kernel by default; ``--all`` compiles every dtype x family x activation x gate.
Prints the number of variants compiled.
"""

from __future__ import annotations

import os
import sys

os.environ.pop("TRITON_INTERPRET", None)

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from bnlab.kernels import triton_bn as K

TARGET = GPUTarget("cuda", 90, 32)  # sm_90 (H100 / H200)
F32 = "*fp32"
F64 = "*fp64"  # the partial moments


def compile_variant(fn, types: dict, constexprs: dict) -> None:
    names = fn.arg_names
    signature = {n: "constexpr" if n in constexprs else types.get(n, "i32") for n in names}
    src = ASTSource(fn=fn, signature=signature, constexprs={(names.index(k),): v for k, v in constexprs.items()})
    triton.compile(src, target=TARGET)


def variants(full: bool):
    dtypes = ("*fp32", "*bf16", "*fp16") if full else ("*bf16",)
    for dt in dtypes:
        elem = {"x_ptr": dt, "y_ptr": dt, "r_ptr": dt, "mask_ptr": "*u8", "dy_ptr": dt, "dx_ptr": dt, "dr_ptr": dt}
        vec = {"mean_ptr": F32, "var_ptr": F32, "lo_ptr": F32, "w_ptr": dt, "b_ptr": dt, "eps": "fp32", "slope": "fp32"}
        for rows in (True, False):
            tile = {"ROWS": rows, "BLOCK_M": 64, "BLOCK_C": 64 if rows else 1}
            parts = {"pn_ptr": F64, "pmean_ptr": F64, "pm2_ptr": F64}
            yield K.stats_partial, {**elem, **parts}, tile
            for act in range(4) if full else (3,):
                for res in (False, True):
                    flags = {
                        "HAS_W": True,
                        "HAS_B": True,
                        "HAS_LO": not res,
                        "HAS_RES": res,
                        "WRITE_MASK": res and act in (1, 2),
                        "EVAL": not res,
                    }
                    yield K.normalize, {**elem, **vec}, {**flags, "ACT": act, **tile}
                for gate in (0, 1, 2):
                    if gate == 2 and act not in (1, 2) or not full and gate != 1:
                        continue
                    sums = {"psg_ptr": F32, "psgx_ptr": F32, "mg_ptr": F32, "mgx_ptr": F32, "factor": "fp32"}
                    flags = {"HAS_W": True, "HAS_B": True, "GATE": gate, "ACT": act}
                    yield K.backward_partial, {**elem, **vec, **sums}, {**flags, **tile}
                    yield K.backward_elemt, {**elem, **vec, **sums}, {**flags, "HAS_DR": gate > 0, **tile}
        run = {"rm_ptr": dt, "rv_ptr": dt, "mom_ptr": F32, "momentum": "fp32", "unbias": "fp32", "m": "fp32"}
        for tensor_momentum in (False, True):
            flags = {"HAS_RM": True, "HAS_RV": True, "MOM_TENSOR": tensor_momentum, "BLOCK_C": 128}
            parts = {"pn_ptr": F64, "pmean_ptr": F64, "pm2_ptr": F64}
            yield K.stats_merge, {**parts, **vec, **run}, {**flags, "HAS_LO": tensor_momentum}
            yield K.update_running, {**vec, **run}, flags
        for rows in (True, False):
            tile = {"ROWS": rows, "BLOCK_M": 128, "BLOCK_C": 32 if rows else 1}
            flags = {"HAS_W": True, "HAS_B": True, "ACT": 3}
            single = {**elem, **vec, **run, "dw_ptr": dt, "db_ptr": dt, "inv_m": "fp32"}
            yield K.forward_single, single, {**flags, "HAS_RM": True, "HAS_RV": True, "MOM_TENSOR": True, **tile}
            yield K.backward_single, single, {**flags, "HAS_DW": True, "HAS_DB": True, "HAS_DX": True, **tile}
        sums = {"psg_ptr": F32, "psgx_ptr": F32, "sg_ptr": F32, "sgx_ptr": F32, "var_ptr": F32, "eps": "fp32"}
        yield K.backward_merge, {**sums, "dw_ptr": dt, "db_ptr": dt}, {"HAS_DW": True, "HAS_DB": True, "BLOCK_C": 256}


if __name__ == "__main__":
    n = 0
    for fn, types, constexprs in variants("--all" in sys.argv):
        compile_variant(fn, types, constexprs)
        n += 1
    print(f"compiled {n} variants for sm_90")
