"""What UNIQ costs under torch.compile: compiled training steps against a compiled float step.

    python benchmarks/compiled_step.py [--models resnet20] [--rounds 7] [--threads 1]

The same training step as ``overhead.py`` (forward, cross-entropy, backward, AdamW step on one
fixed random batch) for ``float``, ``uniq`` (every layer noisy, W4A8) and ``uniq-w`` (weight
noise, float activations), each model wrapped in ``torch.compile`` (inductor, default mode);
``float-eager`` is the uncompiled float model, for what compilation itself buys. The warm-up
steps compile (their time is reported, not counted); then interleaved rounds and the median of
per-round ratios to compiled float, as in ``overhead.py``.

``uniq-gradual`` is ``overhead.py``'s sweep over the stages of a one-block-per-layer schedule,
compiled: each stage is its own graph (the recompilation limit is raised to their number), so
its warm-up compiles them all; a real run pays that once per stage.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import overhead
import torch

logger = logging.getLogger("compiled_step")

SECTION = "Compiled training step"
VARIANTS = ("float", "uniq", "uniq-w", "uniq-gradual")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="+", default=["resnet20"], type=overhead.model_spec, help="NAME[@BATCH]"
    )
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--steps", type=int, default=2, help="steps per variant per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (they compile)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--no-report", action="store_true", help="do not write RESULTS.md")
    parser.add_argument("--out", type=Path, default=common.HERE / "results" / "compiled_step.json")
    args = parser.parse_args(argv)
    if "float" not in args.variants:
        parser.error("--variants needs 'float': every ratio is to the compiled float step")
    return args


def compiled_trainers(
    model_name: str, variants: list[str], warmup: int
) -> tuple[dict, dict[str, float]]:
    """The variants' trainers, compiled and warmed up, and each one's warm-up seconds."""
    trainers = {"float-eager": overhead.build_trainer(model_name, "float")}
    seconds = {}
    for variant in variants:
        trainer = overhead.build_trainer(model_name, variant)
        if isinstance(trainer, overhead.GradualTrainer):
            config = torch._dynamo.config
            config.recompile_limit = max(config.recompile_limit, trainer.schedule.num_stages + 4)
        trainer.model = torch.compile(trainer.model)
        start = time.perf_counter()
        for _ in range(1 if isinstance(trainer, overhead.GradualTrainer) else warmup):
            trainer.step()  # a gradual step is a sweep over every stage
        seconds[variant] = time.perf_counter() - start
        logger.info(
            "%s %s: compiled and warmed up in %.0f s", model_name, variant, seconds[variant]
        )
        trainers[variant] = trainer
    return trainers, seconds


def measure(model_name: str, args: argparse.Namespace) -> dict:
    """Step medians and ratios to compiled float of every variant of ``model_name``."""
    trainers, warmup_seconds = compiled_trainers(model_name, args.variants, args.warmup)
    times = overhead.time_steps(trainers, args.rounds, args.steps, warmup=1)
    return {
        "batch": overhead.setup(model_name)[3],
        "warmup_seconds": warmup_seconds,
        "step": overhead.step_summary(times),
    }


def report(payload: dict) -> str:
    """The RESULTS.md section."""
    lines = [
        f"## {SECTION} ({payload['date']})",
        "",
        f"    {payload['command']}",
        "",
        f"Machine: {payload['machine']}; commit {payload['revision']}; "
        f"{payload['threads']} thread(s). Ratio: median over rounds of the per-round ratio to the "
        "compiled float step; warm-up: the first steps, compilation included (shorter when "
        "inductor's on-disk cache already holds the kernels).",
        "",
        "| model | batch | variant | step ms | ratio to compiled float | warm-up s |",
        "|---|---|---|---|---|---|",
    ]
    for name, result in payload["models"].items():
        for variant, step in result["step"].items():
            warmup = result["warmup_seconds"].get(variant)
            lines.append(
                f"| {name} | {result['batch']} | {variant} | {step['median_ms']:.1f} | "
                f"{step['ratio']:.3f} | {'-' if warmup is None else f'{warmup:.0f}'} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("uniq_quant").setLevel(logging.WARNING)

    payload = {**common.provenance("compiled_step.py", argv, args.threads), "models": {}}
    for model_name in args.models:
        payload["models"][model_name] = measure(model_name, args)
        common.save_json(args.out, payload)
    common.publish(SECTION, report(payload), write=not args.no_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
