"""Regenerate ``cnn_apps/backbones/zoo_table.json``: parameters, FLOPs, feature strides.

Builds every registered backbone once (the 1000-class classification network at its default
input and the ``features_only`` model) and writes one JSON row per name. ``cnn-apps list
backbones`` reads the table and computes rows that are missing or stale (changed description,
input shape or weights flag), so rerun this after adding or changing a backbone.

Usage: python bench/backbone_table.py [--names a,b,...] [--out PATH]
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", help="comma-separated backbone names (default: all)")
    parser.add_argument("--out", help="output JSON (default: the package's zoo_table.json)")
    args = parser.parse_args(argv)

    from cnn_apps.backbones.flops import TABLE_PATH, backbone_summary, load_zoo_table
    from cnn_apps.backbones.registry import list_backbones

    out = args.out or TABLE_PATH
    names = args.names.split(",") if args.names else list_backbones()
    # Keep rows of backbones not rebuilt in this run (a --names refresh keeps the rest).
    rows = {name: row for name, row in load_zoo_table(out).items() if name in list_backbones()}
    failed = []
    for name in names:
        start = time.perf_counter()
        try:
            rows[name] = backbone_summary(name)
        except Exception as exc:  # one broken backbone must not lose the other rows
            failed.append(name)
            print(f"{name:24s} FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        row = rows[name]
        print(f"{name:24s} {row['trainable_params'] / 1e6:8.2f}M params "
              f"{row['flops'] / 1e9:8.3f} GFLOPs strides {row['strides']} "
              f"({time.perf_counter() - start:.1f}s)", flush=True)
    with open(out, "w") as f:
        f.write(json.dumps([rows[name] for name in sorted(rows)], indent=1) + "\n")
    print(f"wrote {len(rows)} rows to {out}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
