"""The report: the answers to the questions about batch norm, with their evidence, as one page.

``write_report(results, out_dir, environment)`` writes index.html, results.json and the CSVs from
ClaimResults; ``bnlab report`` (:mod:`.cli`) runs the experiments and calls it.
"""

from .environment import collect as collect_environment
from .progress import Progress
from .render import render_page
from .writer import results_json, write_report

__all__ = ["Progress", "collect_environment", "render_page", "results_json", "write_report"]
