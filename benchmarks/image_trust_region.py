"""The image walkthrough's generator learning rate, with and without the trust region (``finetune.max_kl``).

The walkthrough's 14x14 MNIST T = 1000 U-Net (README, "Your own image model") is fine-tuned from its
10-step FastDPM start with the walkthrough's settings (``benchmarks/_walkthrough_env.sh``) at
generator learning rates 2e-6 (the walkthrough's, hand-picked), 1e-5 (diverged without the
trust region) and 1e-4 (the toys' default), each with ``finetune.max_kl`` off and at 2e-4 nats.
Every run is scored by ``fewstep evaluate`` over ``--repeats`` draws of 500 samples against the
held-out digits, the floor beside it; the held-out FID during training is drawn per run.

    python benchmarks/image_trust_region.py --checkpoint /tmp/fewstep-walkthrough/pipelines/mnist14-ddpm
    python benchmarks/image_trust_region.py --checkpoint CKPT --set device=cuda     # on a GPU
    python benchmarks/image_trust_region.py --checkpoint CKPT --quick               # smoke test

On one CPU core each run takes about 7 minutes (300 iterations) plus its evaluation.
Writes benchmarks/results/image_trust_region.json and .png.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _mnist_common import RESULTS, Commands, curve, evaluation, records, row  # noqa: E402

HERE = Path(__file__).resolve().parent


def walkthrough_settings() -> dict[str, list[str]]:
    """The --set arguments of ``_walkthrough_env.sh`` (M, FAST, SFT), read by bash itself."""
    script = f"ROOT={shlex.quote(str(HERE.parent))}; source {shlex.quote(str(HERE / '_walkthrough_env.sh'))}; "
    script += 'printf "%s\\n" "$M" "@@" "$FAST" "@@" "$SFT"'
    words = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.split()
    groups, current = [], []
    for w in words + ["@@"]:
        if w == "@@":
            groups.append(current)
            current = []
        else:
            current.append(w)
    return dict(zip(("M", "FAST", "SFT"), groups))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="the walkthrough's model (pipeline folder or checkpoint)")
    p.add_argument("--work", type=Path, default=Path("benchmarks/.cache/image_trust_region"), help="runs and logs")
    p.add_argument("--lrs", type=float, nargs="+", default=[2e-6, 1e-5, 1e-4], help="generator learning rates")
    p.add_argument("--max-kl", type=float, nargs="+", default=[0.0, 2e-4], help="trust regions (0: off)")
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3, help="draws of 500 samples per final score")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="extra --set for every command")
    p.add_argument("--name", default="image_trust_region", help="results/NAME.json and .png")
    p.add_argument("--quick", action="store_true", help="tiny budget; results go to NAME_quick.*")
    args = p.parse_args()
    if args.quick:
        args.work = args.work.with_name(args.work.name + "-quick")
        args.iterations, args.repeats, args.lrs = 4, 1, args.lrs[:1]
        args.overrides += ["evaluate.n_samples=50", "evaluate.train_samples=20", "finetune.batch_size=4"]
    s = walkthrough_settings()
    c = Commands(args.work, args.overrides)
    start_out = c.work / "start.json"
    c.run(
        "start",
        [
            "evaluate",
            "--checkpoint",
            args.checkpoint,
            *s["M"],
            *s["FAST"],
            "--set",
            f"evaluate.repeats={args.repeats}",
            "--out",
            str(start_out),
            "--quiet",
        ],
        done=start_out,
    )
    start = evaluation(start_out)
    every = max(1, args.iterations // 6)
    rows = []
    for lr in args.lrs:
        for max_kl in args.max_kl:
            tag = f"lr{lr:g}-kl{max_kl:g}"
            run_dir, out = c.work / tag, c.work / f"{tag}.json"
            sets = [
                f"finetune.iterations={args.iterations}",
                f"finetune.lr_generator={lr}",
                f"finetune.max_kl={max_kl}",
                f"finetune.eval_every={every}",
                f"finetune.log_every={max(1, every // 5)}",
            ]
            record = c.run(
                tag,
                [
                    "finetune",
                    "--checkpoint",
                    args.checkpoint,
                    *s["M"],
                    *s["FAST"],
                    *s["SFT"],
                    *(x for v in sets for x in ("--set", v)),
                    "--run-dir",
                    str(run_dir),
                    "--quiet",
                ],
                done=run_dir / "summary.md",
                resume=run_dir / "checkpoints" / "finetune.safetensors",
            )
            c.run(
                f"{tag}-eval",
                [
                    "evaluate",
                    "--checkpoint",
                    str(run_dir / "checkpoints" / "finetune.safetensors"),
                    *s["M"],
                    "--set",
                    f"evaluate.repeats={args.repeats}",
                    "--out",
                    str(out),
                    "--quiet",
                ],
                done=out,
            )
            final = evaluation(out)
            logged = records(run_dir)  # its divergence back-offs carry an ``event``
            kls = [r["policy_kl"] for r in logged if r.get("stage") == "finetune" and "policy_kl" in r]
            rows.append(
                row(
                    f"lr {lr:g}, max_kl {max_kl:g}",
                    10,
                    final,
                    lr_generator=lr,
                    max_kl=max_kl,
                    fid_sd=round(final["model_sd"]["fid"], 3),
                    policy_kl_median=round(sorted(kls)[len(kls) // 2], 6) if kls else None,
                    curve=curve(logged),
                    wall_s=record["wall_s"],
                    cpu_s=record["cpu_s"],
                    back_offs=[r["event"] for r in logged if "event" in r],
                )
            )
    name = args.name + ("_quick" if args.quick else "")
    payload = {
        "start": start["model"],
        "start_sd": start["model_sd"],
        "floor": start["floor"],
        "rows": rows,
        "settings": {**s, "iterations": args.iterations, "repeats": args.repeats, "extra": args.overrides},
        "commands": c.history,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2))
    figure(rows, RESULTS / f"{name}.png")
    print(
        f"\n{name}: 14x14 MNIST, 10-step FastDPM start FID {start['model']['fid']:.2f} +- "
        f"{start['model_sd']['fid']:.2f}, floor {start['floor']['fid']:.2f}; {args.iterations} iterations, "
        f"{args.repeats} draws of {start['n']}"
    )
    print(
        "| generator lr | max_kl | FID | KID | precision | recall | median KL / update | held-out FID curve "
        "| back-offs "
        "| wall s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        kl = "off" if r["max_kl"] == 0 else f"{r['max_kl']:g}"
        fids = ", ".join(f"{p['fid']:.1f}" for p in r["curve"])
        print(
            f"| {r['lr_generator']:g} | {kl} | {r['fid']:.2f} +- {r['fid_sd']:.2f} | {r['kid']:.3f} | "
            f"{r['precision']:.3f} | {r['recall']:.3f} | {r['policy_kl_median']} | {fids} | {len(r['back_offs'])} | "
            f"{r['wall_s']:.0f} |"
        )
    print(f"wrote {RESULTS / (name + '.json')} and .png")


def figure(rows: list[dict], path: Path) -> None:
    """Held-out FID during fine-tuning per (learning rate, trust region), the floor dashed."""
    from fewstep.plots import curves as plot_curves

    series = {}
    for r in rows:
        label = f"lr {r['lr_generator']:g}, " + ("no trust region" if r["max_kl"] == 0 else f"max_kl {r['max_kl']:g}")
        series[label] = ([p["iteration"] for p in r["curve"]], [max(p["fid"], 1e-3) for p in r["curve"]])
    floor = rows[0]["curve"][-1]["floor_fid"] if rows and rows[0]["curve"] else None
    plot_curves(
        series,
        path,
        "iteration",
        "held-out FID (evaluate.train_samples)",
        floor=floor,
        logy=True,
        title="SFT-PG (B), 14x14 MNIST, 10 steps: learning rate and trust region",
    )


if __name__ == "__main__":
    main()
