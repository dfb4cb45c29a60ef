"""What UNIQ costs: training-step time and peak memory against float and peer QAT, and latency.

    python benchmarks/overhead.py [--models resnet20 tv:resnet18 tv:resnet18@32] [--rounds 7]
        [--threads 1]

Training step (forward, cross-entropy, backward, AdamW step) of one fixed random batch, for
each model (ResNet-20 on 3 x 32 x 32, batch 32; torchvision ResNet-18 on 3 x 224 x 224, batch
8; ``NAME@BATCH`` sets another batch) and each variant:
* ``float``: the float model;
* ``uniq``: UNIQ noise mode on every layer at once (one-block schedule, the costliest stage of
  a gradual run), 4-bit weights, 8-bit activations;
* ``uniq-w``: the same with float activations (weight noise only);
* ``uniq-channel``: ``uniq`` with one Gaussian fit per output channel;
* ``uniq-gradual``: what a UNIQ run pays on average: the gradual schedule (one block per layer,
  W4A8), one step in each of its stages in turn (earlier layers frozen with cached codes and no
  weight gradient, the current layer noisy, later layers float); the stage switches are not
  timed (a real stage lasts many steps) and the sample is the mean step over the sweep;
* ``uniq-gradual-learned``: the same with learned levels (``QuantConfig.learn_levels``): frozen
  layers decode their codes at every step and pass a gradient to their levels, so their
  convolutions compute a weight gradient again;
* ``brevitas``, ``torchao``: the peers' QAT at W4A8 (see methods/peers.py);
* ``diffq``: DiffQ at about 4 bits with its size penalty, float activations.
Step time: all variants live in one process; each round runs every variant for a few steps in a
rotating order (interleaved, so load from other processes hits all of them alike); the ratio to
float is the median over rounds of the ratio of the round's medians (for ``uniq-gradual``, one
sweep over the stages per round).

Peak memory (Linux): one subprocess per (model, variant) builds the model and optimizer, resets
the kernel's peak resident-set mark (``/proc/self/clear_refs``), runs a few steps, and reads the
peak (VmHWM in /proc/self/status). Reported: that peak, and its growth over the resident set
before the first step, which is the working memory of training (activations, gradients,
optimizer state, quantizer temporaries) as the operating system sees it, allocator caching
included.

Inference latency (eval, no gradient) at batch 1 and at the training batch: the float model,
the converted UNIQ model (W4A8), and the model loaded from its exported file
(``load_quantized``, eagerly and with ``lazy=True``), interleaved, medians, ratios to float.
Where onnxruntime imports, also the two ONNX files a deployment would run: the float model
exported by torch (``onnx-float``) and the UNIQ model written by ``export_onnx``
(``onnx-uniq``: codes and levels, weights rebuilt by Gather), each in an onnxruntime CPU
session with ``--threads`` intra-op threads.

If a UNIQ step costs more than ``--goal`` times a float step, the UNIQ noise step is profiled
with torch.profiler and the top operators are written to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import torch
import torch.nn.functional as F
from methods import METHODS, Job, available
from methods.ours import uniq
from torch import nn

from uniq_quant import (
    GradualSchedule,
    QuantConfig,
    calibrate,
    convert,
    load_quantized,
    prepare,
)
from uniq_quant.export import export_onnx, save_quantized
from uniq_quant.export import onnx as onnx_export
from uniq_quant.models import build_model, model_recipe

logger = logging.getLogger("overhead")

SECTION = "Overhead: training step, memory, inference"
MODELS = {  # name -> (num_classes, input shape, training batch)
    "resnet20": (10, (3, 32, 32), 32),
    "tv:resnet18": (1000, (3, 224, 224), 8),
}
VARIANTS = (
    "float",
    "uniq",
    "uniq-w",
    "uniq-channel",
    "uniq-gradual",
    "uniq-gradual-learned",
    "brevitas",
    "torchao",
    "diffq",
)
GRADUAL = {"uniq-gradual": False, "uniq-gradual-learned": True}  # variant -> learned levels
INFERENCE_ROWS = ("float", "converted", "loaded", "loaded-lazy", "onnx-float", "onnx-uniq")
PEERS = {"brevitas": "brevitas", "torchao": "torchao", "diffq": "diffq"}  # variant -> method
WEIGHT_BITS, ACT_BITS = 4, 8
NOISE_FOREVER = 10**9  # schedule length that keeps the one-block schedule in its noise stage
PROFILE_ROWS = 25


@dataclass
class Trainer:
    """One variant's model, optimizer and step on a fixed batch."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    penalty: Callable[[], torch.Tensor] | None
    images: torch.Tensor
    labels: torch.Tensor

    def step(self) -> None:
        self.train_step()

    def train_step(self) -> None:
        """Forward, loss, backward and optimizer step on the fixed batch."""
        loss = F.cross_entropy(self.model(self.images), self.labels)
        if self.penalty is not None:
            loss = loss + self.penalty()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def timed_step(self) -> float:
        """Seconds of one training step."""
        start = time.perf_counter()
        self.train_step()
        return time.perf_counter() - start


@dataclass
class GradualTrainer(Trainer):
    """A UNIQ model under its gradual schedule: a step is one step in every stage in turn."""

    schedule: GradualSchedule | None = None

    def step(self) -> None:
        for stage in range(self.schedule.num_stages):
            self._enter(stage)
            self.train_step()

    def timed_step(self) -> float:
        """Mean seconds of a step over the stages; the stage switches are not timed."""
        total = 0.0
        for stage in range(self.schedule.num_stages):
            self._enter(stage)
            total += super().timed_step()
        return total / self.schedule.num_stages

    def _enter(self, stage: int) -> None:
        state = self.schedule.state_dict()
        self.schedule.load_state_dict({**state, "counter": stage * self.schedule.stage_length})


def setup(spec: str) -> tuple[str, int, tuple[int, ...], int]:
    """(model name, classes, input shape, training batch) of ``NAME`` or ``NAME@BATCH``."""
    name, _, size = spec.partition("@")
    classes, shape, default = MODELS[name]
    return name, classes, shape, int(size) if size else default


def model_spec(text: str) -> str:
    """argparse type of --models: a name of ``MODELS``, optionally ``@BATCH``."""
    name, _, size = text.partition("@")
    if name not in MODELS or (size and not (size.isdigit() and int(size) > 0)):
        raise argparse.ArgumentTypeError(
            f"expected NAME or NAME@BATCH with NAME in {sorted(MODELS)}, got {text!r}"
        )
    return text


def batch(model_name: str, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    _, classes, shape, _ = setup(model_name)
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn((size, *shape), generator=generator)
    return images, torch.randint(0, classes, (size,), generator=generator)


def float_model(model_name: str) -> nn.Module:
    torch.manual_seed(0)
    name, classes, shape, _ = setup(model_name)
    return build_model(name, classes, shape[0], shape[1])


def build_trainer(model_name: str, variant: str) -> Trainer:
    """The model of ``variant`` with an AdamW optimizer, on the model's training batch."""
    if variant in GRADUAL:
        return build_gradual_trainer(model_name, learn_levels=GRADUAL[variant])
    images, labels = batch(model_name, setup(model_name)[3])
    model = float_model(model_name).train()
    penalty, attach = None, None
    if variant != "float":
        act_bits = None if variant in ("uniq-w", "diffq") else ACT_BITS
        job = Job(WEIGHT_BITS, act_bits, images[:1], steps=NOISE_FOREVER)
        if variant == "uniq-channel":
            prepared = uniq(model, job, one_block=True, per_channel=True)
        else:
            method = METHODS["uniq-oneshot" if variant.startswith("uniq") else PEERS[variant]]
            prepared = method.build(model, job)
        model, penalty, attach = prepared.model.train(), prepared.penalty, prepared.attach
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    if attach is not None:
        attach(optimizer)
    return Trainer(model, optimizer, penalty, images, labels)


def build_gradual_trainer(model_name: str, learn_levels: bool = False) -> GradualTrainer:
    """The UNIQ W4A8 model under a one-block-per-layer schedule, with AdamW."""
    images, labels = batch(model_name, setup(model_name)[3])
    config = QuantConfig(weight_bits=WEIGHT_BITS, act_bits=ACT_BITS, learn_levels=learn_levels)
    model = prepare(float_model(model_name).train(), config, images[:1])
    schedule = GradualSchedule(model, stage_length=1, unit="step")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    return GradualTrainer(model, optimizer, None, images, labels, schedule)


def time_steps(
    trainers: dict[str, Trainer], rounds: int, steps: int, warmup: int
) -> dict[str, list[list[float]]]:
    """Per-step seconds of every trainer, per round, interleaved in rotating order."""
    names = list(trainers)
    for name in names:
        for _ in range(warmup):
            trainers[name].step()
    times: dict[str, list[list[float]]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            calls = 1 if isinstance(trainers[name], GradualTrainer) else steps
            times[name].append([trainers[name].timed_step() for _ in range(calls)])
        logger.info("round %d/%d done", r + 1, rounds)
    return times


def step_summary(times: dict[str, list[list[float]]]) -> dict[str, dict[str, float | str]]:
    """Per variant: median and spread of its step times, and its round ratio to ``float``."""
    return {
        v: {
            "median_ms": median_ms([x for r in t for x in r]),
            "iqr_ms": spread_ms([x for r in t for x in r]),
            "ratio": round_ratio(t, times["float"]),
        }
        for v, t in times.items()
    }


def round_ratio(times: list[list[float]], base: list[list[float]]) -> float:
    """Median over rounds of (median step in the round / base's median step in the round).

    Within a round the variants run back to back, so a change of the machine's load between
    rounds cancels in each round's ratio.
    """
    return statistics.median(
        statistics.median(t) / statistics.median(b) for t, b in zip(times, base, strict=True)
    )


def memory_child(model_name: str, variant: str, steps: int) -> dict[str, int]:
    """Resident memory (KiB) before the first step, and its peak over ``steps`` steps.

    The kernel's peak-RSS mark (VmHWM) is reset after set-up by writing 5 to
    /proc/self/clear_refs, so the peak is that of the training steps alone, not of the
    imports (loading torch's libraries peaks higher than a small model's training).
    """
    trainer = build_trainer(model_name, variant)
    gc.collect()
    _reset_peak_rss()
    setup = _proc_status_kib("VmRSS")
    for _ in range(steps):
        trainer.step()
    return {"setup_kib": setup, "peak_kib": _proc_status_kib("VmHWM")}


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def _proc_status_kib(field: str) -> int:
    """A ``kB`` field of /proc/self/status (Linux)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} line")


def measure_memory(model_name: str, variant: str, steps: int, threads: int) -> dict[str, int]:
    """Run ``memory_child`` in a fresh interpreter and return its measurement."""
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--memory-child",
        model_name,
        variant,
        "--memory-steps",
        str(steps),
        "--threads",
        str(threads),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def inference_models(
    model_name: str, folder: Path, threads: int
) -> dict[str, Callable[[torch.Tensor], object]]:
    """Float, converted UNIQ W4A8, that model loaded from its file (eager and lazy), and, where
    onnxruntime imports, the float and the UNIQ ONNX files in onnxruntime."""
    name, classes, shape, size = setup(model_name)
    images, _ = batch(model_name, size, seed=1)
    base = float_model(model_name).eval()
    config = QuantConfig(weight_bits=WEIGHT_BITS, act_bits=ACT_BITS)
    converted = prepare(float_model(model_name).eval(), config, images[:1])
    calibrate(converted, [images])
    convert(converted).eval()
    path = folder / "model.safetensors"
    recipe = model_recipe(name, classes, shape[0], shape[1])
    save_quantized(converted, path, recipe=recipe, config=config, input_shape=shape)
    models = {
        "float": base,
        "converted": converted,
        "loaded": load_quantized(path),
        "loaded-lazy": load_quantized(path, lazy=True),
    }
    if importlib.util.find_spec("onnxruntime") is not None:
        float_path = export_float_onnx(base, folder / "float.onnx", images[:1])
        uniq_path = export_onnx(converted, folder / "uniq.onnx", images[:1])
        models["onnx-float"] = OnnxRuntimeModel(float_path, threads)
        models["onnx-uniq"] = OnnxRuntimeModel(uniq_path, threads)
    return models


def export_float_onnx(model: nn.Module, path: Path, example: torch.Tensor) -> Path:
    """The float model as ONNX, with the exporter and settings of ``export_onnx``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # all about the legacy exporter
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=onnx_export.OPSET_VERSION,
            input_names=[onnx_export.INPUT_NAME],
            output_names=[onnx_export.OUTPUT_NAME],
            dynamic_axes={
                onnx_export.INPUT_NAME: {0: "batch"},
                onnx_export.OUTPUT_NAME: {0: "batch"},
            },
        )
    return path


class OnnxRuntimeModel:
    """An onnxruntime CPU session called like a module: images in, logits out."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )

    def __call__(self, images: torch.Tensor) -> object:
        return self.session.run(None, {onnx_export.INPUT_NAME: images.numpy()})[0]


@torch.no_grad()
def time_inference(
    models: dict[str, Callable[[torch.Tensor], object]],
    images: torch.Tensor,
    rounds: int,
    steps: int,
) -> dict[str, list[float]]:
    """Per-forward seconds of every model on ``images``, interleaved like ``time_steps``."""
    names = list(models)
    for name in names:
        models[name](images)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            for _ in range(steps):
                start = time.perf_counter()
                models[name](images)
                times[name].append(time.perf_counter() - start)
    return times


def profile_step(trainer: Trainer, steps: int) -> str:
    """torch.profiler table of ``steps`` training steps, operators by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    trainer.step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        for _ in range(steps):
            trainer.step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=PROFILE_ROWS)


def median_ms(values: list[float]) -> float:
    return 1000 * statistics.median(values)


def spread_ms(values: list[float]) -> str:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return f"{1000 * q[0]:.0f}-{1000 * q[2]:.0f}"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        nargs="+",
        type=model_spec,
        default=list(MODELS),
        help=f"NAME or NAME@BATCH, NAME in {', '.join(MODELS)}",
    )
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--steps", type=int, default=2, help="steps per variant per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant")
    parser.add_argument("--memory-steps", type=int, default=3, help="steps per memory child")
    parser.add_argument("--infer-rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--goal", type=float, default=1.05, help="UNIQ / float step target")
    parser.add_argument("--profile-steps", type=int, default=3)
    parser.add_argument("--no-memory", action="store_true", help="skip the memory children")
    parser.add_argument("--no-report", action="store_true", help="do not write RESULTS.md")
    parser.add_argument(
        "--title",
        default=SECTION,
        help="RESULTS.md heading, for a run of some variants in a section of its own",
    )
    parser.add_argument(
        "--out", type=Path, help="raw JSON (default: results/overhead[-TITLE].json)"
    )
    parser.add_argument("--memory-child", nargs=2, metavar=("MODEL", "VARIANT"), help="internal")
    args = parser.parse_args(argv)
    if args.out is None:
        suffix = "" if args.title == SECTION else "-" + common.slug(args.title)
        args.out = common.HERE / "results" / f"overhead{suffix}.json"
    return args


def measure_model(model_name: str, args: argparse.Namespace, payload: dict) -> None:
    """Fill ``payload['models'][model_name]`` with step, memory and inference figures."""
    variants = [v for v in args.variants if v not in payload["not_run"]]
    _, _, shape, size = setup(model_name)
    result: dict = {"batch": size, "input": shape}
    payload["models"][model_name] = result

    # 1. interleaved training-step times
    trainers = {v: build_trainer(model_name, v) for v in variants}
    times = time_steps(trainers, args.rounds, args.steps, args.warmup)
    result["step_seconds"] = times
    result["step"] = step_summary(times)
    logger.info(
        "%s steps: %s", model_name, {v: round(s["ratio"], 3) for v, s in result["step"].items()}
    )

    # 2. profile the UNIQ step when it misses the goal
    ratio = result["step"].get("uniq", {}).get("ratio")
    if ratio is not None and ratio > args.goal:
        name = f"profile-uniq-{model_name.replace(':', '_').replace('@', '-b')}.txt"
        path = args.out.parent / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tables = [
            f"{variant} training step, {args.profile_steps} steps, {args.threads} thread(s)\n"
            + profile_step(trainers[variant], args.profile_steps)
            for variant in ("uniq", "uniq-w", "float")
            if variant in trainers
        ]
        path.write_text("\n\n".join(tables) + "\n")
        result["profile"] = common.relative(path)
    del trainers

    # 3. peak memory, one subprocess per variant
    if not args.no_memory:
        result["memory"] = {
            v: measure_memory(model_name, v, args.memory_steps, args.threads) for v in variants
        }

    # 4. inference latency: float, converted, loaded (eager, lazy), ONNX in onnxruntime
    with tempfile.TemporaryDirectory() as tmp:
        models = inference_models(model_name, Path(tmp), args.threads)
        result["inference"] = {}
        for infer_size in sorted({1, size}):
            images, _ = batch(model_name, infer_size, seed=2)
            times = time_inference(models, images, args.infer_rounds, args.steps)
            base = median_ms(times["float"])
            result["inference"][str(infer_size)] = {
                name: {"median_ms": median_ms(t), "ratio": median_ms(t) / base}
                for name, t in times.items()
            }


def report(payload: dict) -> str:
    """The RESULTS.md section."""
    lines = [
        f"## {payload.get('title', SECTION)} ({payload['date']})",
        "",
        f"Command: `{payload['command']}`  ",
        f"Machine: {payload['machine']}, {payload['threads']} torch thread(s); the CPUs are "
        "shared with other jobs, so absolute times are noisy: the ratios come from "
        "interleaved rounds in one process: step / float is the median over rounds of the "
        "ratio of each round's medians.  ",
        f"Code: commit {payload['revision']}  ",
        "Variants: `uniq` = UNIQ noise mode on every layer at once (W4A8), `uniq-w` = the same "
        "with float activations, `uniq-channel` = `uniq` with per-channel fits, "
        "`uniq-gradual` = the mean step over the stages of the gradual "
        "schedule (one block per layer, W4A8: earlier layers frozen, the current one noisy, "
        "later ones float), `uniq-gradual-learned` = the same with learned levels (frozen "
        "layers train their levels, so their weight gradient is computed), peers at W4A8 "
        "(DiffQ about 4 bits, float activations). Step = forward, cross-entropy, backward, "
        "AdamW step on a fixed random batch. Memory = peak RSS "
        "of a fresh process per variant over its training steps (VmHWM, reset after set-up), "
        "and its growth over the resident set before the first step. Inference: `converted` = "
        "the UNIQ model after `convert`, `loaded` / `loaded-lazy` = its packed file read by "
        "`load_quantized` (lazy: weights decoded at every call), `onnx-float` / `onnx-uniq` = "
        "the float model's ONNX export and the UNIQ `export_onnx` file in onnxruntime (CPU, "
        f"{payload['threads']} intra-op thread(s)); every ratio is to the torch float model.",
        "",
    ]
    for model_name, r in payload["models"].items():
        shape = "x".join(str(d) for d in r["input"])
        lines += [
            f"**{model_name}**, input {shape}, batch {r['batch']}",
            "",
            "| variant | step median (ms) | IQR (ms) | step / float | peak RSS (MiB) | "
            "step growth (MiB) | growth / float |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        memory = r.get("memory", {})
        base = memory.get("float")
        base_growth = None if base is None else base["peak_kib"] - base["setup_kib"]
        for v, s in r["step"].items():
            m = memory.get(v)
            peak = growth = ratio = ""
            if m is not None:
                peak = f"{m['peak_kib'] / 1024:.0f}"
                grow = m["peak_kib"] - m["setup_kib"]
                growth = f"{grow / 1024:.0f}"
                ratio = f"{grow / base_growth:.2f}" if base_growth else ""
            lines.append(
                f"| {v} | {s['median_ms']:.1f} | {s['iqr_ms']} | {s['ratio']:.3f} | {peak} | "
                f"{growth} | {ratio} |"
            )
        lines += [
            "",
            "| inference (eval) | "
            + " | ".join(f"batch {b} median (ms) | batch {b} / float" for b in r["inference"])
            + " |",
            "|---|" + "---:|---:|" * len(r["inference"]),
        ]
        for name in INFERENCE_ROWS:
            if name not in next(iter(r["inference"].values())):
                continue
            cells = []
            for b in r["inference"]:
                s = r["inference"][b][name]
                cells += [f"{s['median_ms']:.2f}", f"{s['ratio']:.3f}"]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        for v in ("uniq-gradual", "uniq-gradual-learned", "uniq", "uniq-w", "uniq-channel"):
            if v in r["step"]:
                ratio = r["step"][v]["ratio"]
                verdict = "met" if ratio <= payload["goal"] else "NOT met"
                lines += [
                    "",
                    f"Goal {v} step <= {payload['goal']} x float: {ratio:.3f}, {verdict}.",
                ]
        if "profile" in r:
            lines += ["", f"torch.profiler tables (uniq, uniq-w, float): `{r['profile']}`."]
        lines.append("")
    if payload["not_run"]:
        lines += ["Not run:"]
        lines += [f"- {v}: not run: {why}" for v, why in payload["not_run"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_child:
        model_name, variant = args.memory_child
        logging.disable(logging.WARNING)
        sys.stdout.write(json.dumps(memory_child(model_name, variant, args.memory_steps)) + "\n")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("uniq_quant").setLevel(logging.WARNING)

    payload = {
        **common.provenance("overhead.py", argv, args.threads),
        "title": args.title,
        "goal": args.goal,
        "not_run": {},
        "models": {},
    }
    for variant in args.variants:
        if variant in PEERS:
            reason = available(METHODS[PEERS[variant]])
            if reason is not None:
                payload["not_run"][variant] = reason
    for model_name in args.models:
        measure_model(model_name, args, payload)
        common.save_json(args.out, payload)
    common.publish(payload["title"], report(payload), write=not args.no_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
