#!/usr/bin/env python
"""The 7B path end to end through the `poolattn` commands a user runs (see README.md here).

One sequence, parameterised by preset, on a GPU node or rehearsed on CPU:

1. `poolattn plan` for the run's own settings;
2. `poolattn train --nproc N` of m5 (ZeRO-3 with optimizer offload, GradCache chunks, gradient
   checkpointing, the preset's precision), killed with SIGKILL mid-run and resumed;
3. `poolattn merge`, `poolattn export` fp32 and int8-dynamic (verify gates both);
4. `poolattn bench latency` with its backbone / head cost split;
5. m1 and the paper-size head initialised (`poolattn init`), exported (fp32) and verified; the
   paper head planned (trained too where the plan says it fits).

Every stage is timed and its processes' peak resident memory is read from /proc per rank
(VmHWM), next to `poolattn plan --device cpu` (on CPU) for the same settings. No model, DeepSpeed
config, ONNX Runtime session or timer lives here: only the commands and the record.

    python benchmarks/gpu/run_gpu_validation.py --preset mistral-7b --nproc 8 --steps 4  # GPU node
    python benchmarks/gpu/run_gpu_validation.py --preset mistral-7b-width --dry-run  # CPU
    make rehearsal-7b-width                                     # the same, recorded
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from toolchain.atomic import read_manifest, write_json_atomic, write_text_atomic  # noqa: E402
from toolchain.cpu import recorded_flags  # noqa: E402
from toolchain.presets import load_preset  # noqa: E402
from toolchain.train.config import config_for_preset  # noqa: E402
from toolchain.train.recipe import KILL_ENV  # noqa: E402
from toolchain.train.rundir import read_metrics  # noqa: E402

POOLATTN = [str(Path(sys.executable).with_name("poolattn"))]
POLL_S = 0.2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="mistral-7b", help="mistral-7b on a GPU node; "
                   "mistral-7b-width (real width, 2 layers) or tiny-mistral on CPU")
    p.add_argument("--dry-run", action="store_true",
                   help="run on CPU (gloo ranks, CPU ONNX Runtime): the rehearsal")
    p.add_argument("--nproc", type=int, default=None, help="ranks (default: 2 on CPU, "
                   "every visible GPU otherwise)")
    p.add_argument("--steps", type=int, default=None, help="m5 steps (default: the preset's)")
    p.add_argument("--kill-after", type=int, default=None,
                   help="SIGKILL the m5 run once this step is logged (default: the last step, "
                   "before its final save; the checkpoint is one step earlier)")
    p.add_argument("--grid", default="1x32,8x128", help="latency grid, BATCHxSEQ,...")
    p.add_argument("--quick", action="store_true",
                   help="m5 only: train (kill + resume), merge, export fp32, verify")
    p.add_argument("--runs", type=Path, default=None,
                   help="run root (default: runs/<preset>; replaced)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results",
                   help="where rehearsal_<preset>.json/.md go")
    return p.parse_args(argv)


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _descendants(pid: int) -> list[int]:
    tree, found, todo = _children(), [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(tree.get(current, []))
    return found


def _hwm_and_rank(pid: int) -> tuple[float, str] | None:
    """(VmHWM MiB, rank label) of a process: its RANK variable, else "main"."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    hwm = next((line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")), None)
    if hwm is None:
        return None
    rank = next((v[5:].decode() for v in environ if v.startswith(b"RANK=")), "main")
    return int(hwm) / 1024, rank


def run_stage(name: str, args: list[str], log: Path, kill_at_step: int | None = None,
              required: bool = True) -> dict:
    """Run one `poolattn` command (its own process group), polling every process's peak RSS
    by rank. ``kill_at_step``: every rank SIGKILLs itself right after that step's metrics and
    checkpoint (the recipe's own hook, so the kill lands at the same point on any machine);
    the stage must then fail. A failed stage stops the run, unless not ``required``: then its
    record says how it failed (the paper head at real width may not fit a small machine)."""
    command = POOLATTN + args
    print(f"[{name}] {' '.join(['poolattn', *args])}", flush=True)
    env = dict(os.environ)
    if kill_at_step is not None:
        env[KILL_ENV] = str(kill_at_step)
    # `train --nproc 1` trains in its own process: that process is rank 0 (its children, e.g. a
    # kernel build, inherit the RANK it sets, so they must not stand for it)
    root_label = "0" if args[0] == "train" else "main"
    start = time.perf_counter()
    peaks: dict[str, float] = {}
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True, cwd=ROOT, env=env)
        while process.poll() is None:
            for pid in _descendants(process.pid):
                seen = _hwm_and_rank(pid)
                if seen is not None:
                    label = root_label if pid == process.pid and seen[1] == "main" else seen[1]
                    peaks[label] = max(peaks.get(label, 0.0), seen[0])
            time.sleep(POLL_S)
    seconds = time.perf_counter() - start
    killed = kill_at_step is not None
    if killed and process.returncode == 0:
        raise SystemExit(f"error: stage {name} was to be killed at step {kill_at_step} but "
                         "finished")
    if process.returncode != 0 and not killed:
        if required:
            raise SystemExit(f"error: stage {name} failed (exit {process.returncode}); see {log}")
        print(f"[{name}] failed (exit {process.returncode}); recorded, see {log}", flush=True)
    ranks = {k: round(v, 1) for k, v in sorted(peaks.items()) if k != "main"}
    shown = " ".join(["poolattn", *args]).replace(f"{ROOT}/", "")  # paths relative to the clone
    return {"stage": name, "command": shown, "seconds": round(seconds, 1),
            "killed": killed, "exit": process.returncode, "peak_rss_mib": ranks or {"main": round(peaks.get("main", 0), 1)}}


def _memory_bytes() -> int:
    """This machine's memory (MemTotal)."""
    line = next(x for x in Path("/proc/meminfo").read_text().splitlines()
                if x.startswith("MemTotal"))
    return int(line.split()[1]) * 1024


def plan(preset: str, nproc: int, device: str, head: str | None = None,
         variant: str = "m5") -> dict:
    args = ["plan", "--preset", preset, "--gpus", str(nproc), "--zero", "3", "--offload",
            "--variant", variant, "--json", "--device", device]
    if head:
        args += ["--head", head]
    done = subprocess.run(POOLATTN + args, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"error: poolattn plan failed: {done.stderr.strip()}")
    return json.loads(done.stdout)


def artifact_facts(path: Path) -> dict:
    manifest = read_manifest(path, verify=False)  # verified by the export that wrote it
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    verify = manifest.get("verify", {})
    return {"path": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
            "bytes": size, "external_data": manifest.get("external_data"),
            "verify_passed": verify.get("passed"),
            "texts_min_cosine": verify.get("parity_texts", {}).get("min_cosine"),
            "random_min_cosine": verify.get("parity_random_shapes", {}).get("min_cosine"),
            "batch_invariance": verify.get("batch_invariance", {}).get("min_cosine"),
            "attention": verify.get("attention_probe", {}).get("observed"),
            "rows_per_call": verify.get("rows_per_call")}


def plan_vs_measured(record: dict) -> list[dict]:
    """Each rank's measured peak (training stages) against the plan: on CPU the rank's resident
    memory vs the plan's CPU rank peak; on a GPU rank 0's peak allocated CUDA memory (from the
    training metrics) vs the plan's per-GPU total."""
    if record["device"] == "gpu":
        planned = record["plan"]["m5"]["totals"]["checkpointing"]
        measured = record.get("m5_peak_gpu_mb", 0) * 2**20
        return [{"stage": "train m5", "rank": "0 (CUDA allocated)", "measured_bytes": int(measured),
                 "plan_bytes": int(planned), "error": planned / measured - 1}] if measured else []
    planned = record["plan"]["m5"]["cpu_rank"]["peak"]
    rows = []
    for stage in record["stages"]:
        if not stage["stage"].startswith("train m5"):
            continue
        for rank, mib in stage["peak_rss_mib"].items():
            measured = mib * 2**20
            rows.append({"stage": stage["stage"], "rank": rank, "measured_bytes": int(measured),
                         "plan_bytes": int(planned), "error": planned / measured - 1})
    return rows


def render_markdown(record: dict) -> str:
    gib, mib = 2**30, 2**20
    flags = ", ".join(f"{name} {'yes' if on else 'no'}" for name, on in record["cpu_flags"].items())
    lines = [f"# 7B path rehearsal: preset `{record['preset']}` on {record['device']} "
             f"({record['nproc']} ranks)", "", f"Reproduce: `{record['command']}`", "",
             f"CPU flags: {flags}. Every stage is a `poolattn` command; peak RSS is each rank's "
             "VmHWM read from /proc every 0.2 s (the launcher processes excluded).", "",
             f"Total: {record['total_seconds'] / 60:.1f} min of stages.", "",
             "| stage | seconds | peak RSS per rank (MiB) | command |", "|---|---|---|---|"]
    for st in record["stages"]:
        peaks = ", ".join(f"{k}: {v:,.0f}" for k, v in st["peak_rss_mib"].items())
        note = " (SIGKILL)" if st["killed"] else (f" (FAILED, exit {st['exit']})"
                                                   if st.get("exit") else "")
        lines.append(f"| {st['stage']}{note} | "
                     f"{st['seconds']:.0f} | {peaks} | `{st['command']}` |")
    rank = record["plan"]["m5"].get("cpu_rank")
    lines += ["", "## Plan vs measured peak RSS per rank (m5 training)", ""]
    if rank:
        lines.append(f"`poolattn plan --device cpu`: runtime {rank['runtime'] / gib:.2f} GiB "
                     f"(measured by the plan's own process) + max(build "
                     f"{(rank['build'] - rank['runtime']) / gib:.2f}, train "
                     f"{(rank['train'] - rank['runtime']) / gib:.2f}) = "
                     f"{rank['peak'] / gib:.2f} GiB per rank.")
    lines += ["", "| stage | rank | measured GiB | plan GiB | error (plan / measured - 1) |",
              "|---|---|---|---|---|"]
    lines += [f"| {r['stage']} | {r['rank']} | {r['measured_bytes'] / gib:.2f} | "
              f"{r['plan_bytes'] / gib:.2f} | {r['error']:+.1%} |" for r in plan_vs_measured(record)]
    paper = record["plan"].get("m5 paper head")
    if paper:
        cpu = paper.get("cpu_rank", {})
        need = record["nproc"] * cpu.get("peak", 0)
        verdict = ("above this machine's" if need > record["memory_bytes"] else "within this "
                   "machine's")
        lines += ["", f"Paper head (`poolattn plan --head paper`): "
                  f"{paper['counts']['trainable'] / 1e6:,.0f} M trainable parameters; the plan "
                  f"puts one rank at {cpu.get('peak', 0) / gib:.1f} GiB, {record['nproc']} ranks "
                  f"at {need / gib:.1f} GiB, {verdict} {record['memory_bytes'] / gib:.1f} GiB, "
                  "so it is not trained here; initialised with `poolattn init --head-size paper`"
                  + ("; exported and verified below." if "m5-paper/onnx-fp32" in record["artifacts"]
                     else "; its export did not complete (see the stage table).")]
    lines += ["", "## Artifacts", "", "| artifact | MiB | external data | verify | cos texts | "
              "cos random | batch invariance | attention | texts per call |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, a in record["artifacts"].items():
        lines.append(f"| {name} | {a['bytes'] / mib:,.0f} | {a['external_data']} | "
                     f"{'PASS' if a['verify_passed'] else 'FAIL'} | {a['texts_min_cosine']} | "
                     f"{a['random_min_cosine']} | {a['batch_invariance']} | {a['attention']} | "
                     f"{a.get('rows_per_call')} |")
    latency = record.get("latency")
    if latency:
        lines += ["", "## Latency and the head's share at real width", "",
                  "| model | batch x seq | p50 ms |", "|---|---|---|"]
        lines += [f"| {r['model']} | {r['batch']} x {r['seq_len']} | {r['p50_ms']:.1f} |"
                  for r in latency["latency"]]
        lines += ["", "| variant | batch x seq | backbone ms | head ms | head % of backbone, "
                  "measured | analytic |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['variant']} | {r['shape']} | {r['backbone_p50_ms']:.1f} | "
                  f"{r['head_p50_ms']:.2f} | {r['added_pct']:.2f} | {r['analytic_head_pct']:.2f} |"
                  for r in latency["split"]]
    if record.get("m5_losses"):
        lines += ["", f"m5 losses by step (after the kill and resume): "
                  f"{', '.join(f'{v:.4f}' for v in record['m5_losses'])}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    on_gpu = torch.cuda.is_available() and not args.dry_run
    if not on_gpu and not args.dry_run:
        print("error: no CUDA device visible (torch.cuda.is_available() is False). This script "
              "validates the 7B path on a GPU node; on a CPU machine run it with --dry-run.",
              file=sys.stderr)
        return 2
    nproc = args.nproc or (torch.cuda.device_count() if on_gpu else 2)
    device = "gpu" if on_gpu else "cpu"
    runs = args.runs or ROOT / "runs" / args.preset
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir(parents=True)
    log = runs / "rehearsal.log"
    stages: list[dict] = []
    record = {"preset": args.preset, "device": device, "nproc": nproc,
              "command": " ".join(["python benchmarks/gpu/run_gpu_validation.py",
                                   *(argv if argv is not None else sys.argv[1:])]),
              "cpu_flags": recorded_flags(), "memory_bytes": _memory_bytes(),
              "stages": stages}
    train = ["train", "--preset", args.preset, "--nproc", str(nproc), "--zero", "3", "--offload"]
    m5 = runs / "m5"
    steps = args.steps or config_for_preset(load_preset(args.preset)).steps
    kill_after = args.kill_after or steps
    record["plan"] = {"m5": plan(args.preset, nproc, device)}
    # a checkpoint one step before the kill, so the resume retrains exactly the killed step
    m5_train = train + ["--variant", "m5", "--run-dir", str(m5), "--steps", str(steps),
                        "--save-every", str(max(1, kill_after - 1))]
    stages.append(run_stage("train m5", m5_train + ["--no-resume"], log,
                            kill_at_step=kill_after))
    # torchrun exits 1 whether its ranks were killed or failed: the steps logged tell them apart
    logged = len(read_metrics(m5 / "metrics.jsonl")) if (m5 / "metrics.jsonl").is_file() else 0
    if logged != kill_after:
        raise SystemExit(f"error: stage train m5 logged {logged} steps before it ended (exit "
                         f"{stages[-1]['exit']}), not the {kill_after} of the kill; see {log}")
    stages.append(run_stage("train m5 (resumed)", m5_train, log))
    steps_logged = read_metrics(m5 / "metrics.jsonl")
    record["m5_losses"] = [m["loss"] for m in steps_logged]
    record["m5_peak_gpu_mb"] = max((m.get("peak_gpu_mb", 0) for m in steps_logged), default=0)
    stages.append(run_stage("merge m5", ["merge", str(m5)], log))
    # int8-dynamic, not the row-wise default: that calibrates its fp32 groups on one graph
    # holding every MatMul twice (int8 and fp32 paths), ~2x the fp32 weights again at 7B
    profiles = ["fp32"] if args.quick else ["fp32", "int8-dynamic"]
    stages.append(run_stage("export m5", ["export", str(m5 / "merged"),
                                          *[a for p in profiles for a in ("--profile", p)]], log))
    record["artifacts"] = {f"m5/onnx-{p}": artifact_facts(m5 / f"onnx-{p}") for p in profiles}
    if not args.quick:
        latency = runs / "latency.json"
        stages.append(run_stage("bench latency m5", [
            "bench", "latency", *[str(m5 / f"onnx-{p}") for p in profiles], "--grid", args.grid,
            "--warmup", "1", "--repeats", "3", "--threads", str(os.cpu_count()),
            "--provider", "cuda" if on_gpu else "cpu", "--out", str(latency)], log))
        record["latency"] = json.loads(latency.read_text())
        # m1 trains LoRA only (EOS pooling, no head), a path m5's run covers: its export differs
        m1 = runs / "m1"
        stages.append(run_stage("init m1", ["init", "--preset", args.preset, "--variant", "m1",
                                            "--out", str(m1 / "merged")], log))
        stages.append(run_stage("export m1", ["export", str(m1 / "merged")], log))
        record["artifacts"]["m1/onnx-fp32"] = artifact_facts(m1 / "onnx-fp32")
        record["plan"]["m5 paper head"] = plan(args.preset, nproc, device, head="paper")
        paper = runs / "m5-paper"
        stages.append(run_stage("init m5 paper head", [
            "init", "--preset", args.preset, "--variant", "m5", "--head-size", "paper",
            "--out", str(paper / "merged")], log, required=False))
        if stages[-1]["exit"] == 0:
            stages.append(run_stage("export m5 paper head", ["export", str(paper / "merged")],
                                    log, required=False))
        if (paper / "onnx-fp32" / "manifest.json").is_file():
            record["artifacts"]["m5-paper/onnx-fp32"] = artifact_facts(paper / "onnx-fp32")
    record["total_seconds"] = round(sum(s["seconds"] for s in stages), 1)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"rehearsal_{args.preset.replace('-', '_')}"
    write_json_atomic(stem.with_suffix(".json"), record)
    write_text_atomic(stem.with_suffix(".md"), render_markdown(record))
    print(f"wrote {stem}.json and {stem}.md ({record['total_seconds']:.0f} s of stages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
