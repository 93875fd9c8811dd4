"""Run the project's benchmarks on PostgreSQL and print their figures.

    python -m bench                     # every benchmark at full scale
    python -m bench --scale small       # a quick run
    python -m bench --only engine       # one module

The database is BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/dunning_bench); it is
dropped and re-created at the start. Results are also written to bench-results/latest.json.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from pathlib import Path

from bench.common import prepare_environment, truncate_all

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=["small", "full"], default="full",
                        help="full: the sizes the issues name; small: a quick smoke run")
    parser.add_argument("--only", action="append", default=[], help="run only these modules (repeatable)")
    args = parser.parse_args(argv)

    url = prepare_environment()
    modules = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                     if m.name not in {"common", "__main__"})
    if args.only:
        modules = [m for m in modules if m in args.only]
    print(f"Benchmarks on {url} (scale: {args.scale}): {', '.join(modules)}")
    results = {}
    for name in modules:
        module = importlib.import_module(f"bench.{name}")
        print(f"\n== {name} ==", flush=True)
        truncate_all()  # each module starts from an empty database, whatever ran before it
        rows = module.run(args.scale)
        results[name] = rows
        for r in rows:
            ratio = f"  ratio to {r['ratio_to']}: {r['ratio']:.2f}x" if r.get("ratio") is not None else ""
            target = f"  (target {r['target']})" if r.get("target") else ""
            note = f"  [{r['note']}]" if r.get("note") else ""
            value = f"{r['value']:,.1f}" if isinstance(r["value"], float) else f"{r['value']:,}"
            print(f"  {r['name']}: {value} {r['unit']}{target}{ratio}{note}", flush=True)
    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
