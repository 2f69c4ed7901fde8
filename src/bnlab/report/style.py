"""The page's stylesheet, inlined into index.html: a readable measure, system fonts, no assets."""

CSS = """
:root {
  --ink: #1d2329; --muted: #5f6b76; --line: #dde3e8; --paper: #fbfbf9; --card: #ffffff;
  --accent: #2f5d8a; --code-bg: #f3f5f7;
  --ok: #1d7a46; --ok-bg: #e3f4ea; --no: #b3261e; --no-bg: #fbe6e4;
  --maybe: #8a5a00; --maybe-bg: #fdf1d6; --missing: #6b7480; --missing-bg: #eef0f2;
  --weak: #6a3d8f; --weak-bg: #f1e9f7;
}
* { box-sizing: border-box; }
html { font-size: 17px; }
body {
  margin: 0; background: var(--paper); color: var(--ink); line-height: 1.6;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "Liberation Sans",
               "DejaVu Sans", Arial, sans-serif;
}
main { max-width: 50rem; margin: 0 auto; padding: 2.5rem 1.25rem 4rem; }
h1 { font-size: 2.1rem; line-height: 1.2; margin: 0 0 0.6rem; letter-spacing: -0.01em; }
h2 { font-size: 1.45rem; line-height: 1.3; margin: 3rem 0 1rem; padding-top: 1rem;
     border-top: 2px solid var(--line); }
h3 { font-size: 1.08rem; margin: 0; }
h3.sub { margin: 1.8rem 0 0.6rem; color: var(--muted); font-size: 0.85rem; text-transform: uppercase;
         letter-spacing: 0.06em; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
p { margin: 0.6rem 0; }
.lede { font-size: 1.12rem; color: #33404c; }
.muted { color: var(--muted); }
.small { font-size: 0.82rem; }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "Liberation Mono",
            "DejaVu Sans Mono", monospace; font-size: 0.84rem; }
p code, li code { background: var(--code-bg); padding: 0.08em 0.3em; border-radius: 4px; }

.badge { display: inline-block; padding: 0.12rem 0.6rem; border-radius: 999px; font-size: 0.78rem;
         font-weight: 650; white-space: nowrap; border: 1px solid transparent; line-height: 1.5; }
.badge.ok { color: var(--ok); background: var(--ok-bg); border-color: #b5dec5; }
.badge.no { color: var(--no); background: var(--no-bg); border-color: #f0bcb7; }
.badge.maybe { color: var(--maybe); background: var(--maybe-bg); border-color: #ecd39a; }
.badge.missing { color: var(--missing); background: var(--missing-bg); border: 1px dashed #b9c0c7; }
.badge.weak { color: var(--weak); background: var(--weak-bg); border: 1px dashed #c9b0dc; }
/* how stable a verdict is, next to its badge */
.stab { font-size: 0.76rem; color: var(--muted); white-space: normal; }
.stab.weak { color: var(--weak); }

table { border-collapse: collapse; width: 100%; }
.verdict-table th, .verdict-table td { text-align: left; padding: 0.5rem 0.6rem;
                                       border-bottom: 1px solid var(--line); vertical-align: top; }
.verdict-table thead th { font-size: 0.8rem; color: var(--muted); text-transform: uppercase;
                          letter-spacing: 0.05em; border-bottom: 2px solid var(--line); }
.verdict-table td.cid { font-weight: 650; white-space: nowrap; width: 3.5rem; }
.verdict-table td:last-child { width: 9rem; }
.verdict-table tbody tr:hover { background: #f2f5f8; }

.toc ol { padding-left: 1.4rem; }
.toc li { margin: 0.25rem 0; }

.answer { background: #eef3f8; border-left: 4px solid var(--accent); padding: 0.8rem 1.1rem;
          border-radius: 0 8px 8px 0; }
.found { list-style: none; padding: 0; margin: 0.5rem 0 0; display: flex; flex-wrap: wrap; gap: 0.4rem 1rem;
         font-size: 0.9rem; }
.found li { display: inline-flex; gap: 0.35rem; align-items: center; }

pre.math { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
           padding: 0.8rem 1rem; overflow-x: auto; font-size: 0.9rem; line-height: 1.55; }
pre.code { position: relative; background: #1f2630; color: #e6edf3; border-radius: 8px;
           padding: 1.4rem 1rem 0.9rem; overflow-x: auto; line-height: 1.5; }
pre.code .lang { position: absolute; top: 0.35rem; right: 0.7rem; font-size: 0.7rem; color: #8b98a5;
                 text-transform: uppercase; letter-spacing: 0.06em; }
pre.setup { background: var(--code-bg); border-radius: 6px; padding: 0.7rem 0.9rem; overflow-x: auto;
            font-size: 0.78rem; }

.claim { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
         padding: 1rem 1.2rem; margin: 1rem 0; box-shadow: 0 1px 2px rgba(20, 30, 40, 0.04); }
.claim > header { display: flex; align-items: center; gap: 0.6rem; flex-wrap: wrap; }
.claim > header h3 { flex: 1 1 18rem; }
.cid { font-weight: 700; color: var(--accent); }
.claim.ref, .claim.missing { background: transparent; box-shadow: none; }
.claim.missing { border-style: dashed; }
blockquote { margin: 0.8rem 0; padding: 0.1rem 0 0.1rem 0.9rem; border-left: 3px solid var(--line);
             color: #3a4652; font-style: italic; }
blockquote footer { font-style: normal; font-size: 0.85rem; color: var(--muted); }
.summary { font-size: 1.02rem; }
.rule { font-size: 0.9rem; color: #3a4652; }

table.numbers { margin: 0.8rem 0; font-size: 0.9rem; }
table.numbers th, table.numbers td { padding: 0.3rem 0.5rem; border-bottom: 1px solid var(--line);
                                     text-align: left; vertical-align: top; }
table.numbers th { font-weight: 600; width: 40%; color: #33404c; word-break: break-word; }
.est { font-weight: 650; font-variant-numeric: tabular-nums; }
.ci { color: var(--muted); font-variant-numeric: tabular-nums; }

figure.fig { margin: 1.2rem 0; text-align: center; }
figure.fig img { max-width: 100%; height: auto; background: #fff; border: 1px solid var(--line);
                 border-radius: 6px; padding: 0.4rem; }
figcaption { font-size: 0.88rem; color: #44505c; margin-top: 0.4rem; text-align: left; }
.error { color: var(--no); background: var(--no-bg); border-radius: 6px; padding: 0.6rem 0.8rem;
         text-align: left; }
details { margin: 0.6rem 0; }
summary { cursor: pointer; color: var(--accent); font-size: 0.9rem; }
.environment table.numbers th { width: 30%; }
/* the top: a quick run is a smoke test and says so loudly; its verdicts are muted */
.notice { background: #fff4d6; border: 2px solid #e0a800; border-radius: 8px; padding: 0.8rem 1rem;
          margin: 1rem 0; font-size: 1.02rem; }
body.quick .badge:not(.missing) { color: var(--missing); background: var(--missing-bg); border: 1px dashed #b9c0c7;
                    font-weight: 500; }
body.quick .badge:not(.missing)::after { content: " · smoke test"; font-weight: 400; }
.meta { font-size: 0.88rem; }

/* short answers */
.qa-list { list-style: none; padding: 0; margin: 0; counter-reset: qa; }
.qa { margin: 0 0 1.1rem; padding: 0 0 0.9rem; border-bottom: 1px solid var(--line); }
.qa h3 { font-size: 1.05rem; margin-bottom: 0.25rem; }
.qa h3 a { color: var(--ink); }
p.short { margin: 0.2rem 0 0.35rem; }
.evidence { list-style: none; padding: 0; margin: 0; display: flex; flex-wrap: wrap; gap: 0.3rem 0.9rem;
            font-size: 0.86rem; align-items: center; }
.evidence li { display: inline-flex; gap: 0.35rem; align-items: center; }
.marks { display: inline-flex; flex-wrap: wrap; gap: 0.15rem 0.4rem; align-items: center; }
.sources { color: #33404c; }

/* claim cards */
p.finding { font-size: 1.02rem; margin: 0.6rem 0; }
p.finding.weak { background: var(--weak-bg); border-radius: 6px; padding: 0.4rem 0.6rem; }
p.finding.weak .muted { font-size: 0.9rem; }
.flag { display: inline-block; margin-left: 0.4rem; font-size: 0.78rem; color: var(--maybe);
        background: var(--maybe-bg); border-radius: 4px; padding: 0 0.35rem; }
details.more { border-top: 1px solid var(--line); padding-top: 0.4rem; }
details.more > p { font-size: 0.92rem; }
table.setup td code { font-size: 0.78rem; }

/* internal covariate shift side by side */
table.side { font-size: 0.86rem; margin: 0.6rem 0; }
table.side th, table.side td { border-bottom: 1px solid var(--line); padding: 0.35rem 0.4rem; text-align: left;
                               vertical-align: top; }
table.side thead th { color: var(--muted); font-weight: 600; }
.believe { background: #eef3f8; border-radius: 8px; padding: 0.7rem 0.9rem; }

/* from scratch and the pitfalls */
.code-caption { font-size: 0.8rem; color: var(--muted); margin: 0.6rem 0 0.2rem; font-family: ui-monospace,
                "DejaVu Sans Mono", monospace; }
.pitfall-list > li { margin: 0.2rem 0 1rem; }
.pitfall-list p { margin: 0.25rem 0; }
.fix { color: #1f4d2c; }

@media (max-width: 40rem) { html { font-size: 16px; } main { padding: 1.5rem 0.9rem; } }
"""
