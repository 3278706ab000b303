"""The quick-preset study: which settings give the best model for a fixed CPU budget.

Every variant is the first quick preset (``quick-v1``; ``quick`` up to the thirteenth round) plus ``--set``
overrides. The budget is CPU time, so each
variant trains for as many steps as fit in ``--budget-s`` at *its own* step time on the CPU
(measured here by ``time``), whatever machine then runs the training:

    python benchmarks/quick_study.py time --out docs/quick-study-cpu-times.json            # on the 2-core CPU
    python benchmarks/quick_study.py run --times docs/quick-study-cpu-times.json \\
        --budget-s 1740 --device cuda --parallel 16 --out study/runs           # anywhere (a GPU is fastest)
    python benchmarks/quick_study.py table --out study/runs                     # -> markdown table

A run is ``ccvae train --preset quick-v1 --set ... --max-steps N`` then ``ccvae evaluate``: the same
code and protocol as ``ccvae run``. ``run`` trains the variants with seed 0, then the
best ``--finalists`` again with seed 1 (best: identity from sampled z within twice chance in both
identity protocols, then the highest ground-truth swap PSNR).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PRESET = "quick-v1"
# The lr decay at this fraction of each variant's steps (the first preset: step 8,343 of 10,029), and the
# training budget in CPU seconds of the rounds since the twelfth.
DECAY_AT = 8343 / 10029
ROUND_BUDGET_S = 610
# The sixteenth round's larger budget (12,000 steps of bigdec2-kl2-revdec), which `--preset quick-sharp` trains;
# at ROUND_BUDGET_S (5,056 steps) the same variant is `--preset quick` (nineteenth round).
SHARP_BUDGET_S = 1447.8
# name -> --set overrides on the first quick preset (`--preset quick-v1`, `runs/quick-v5`; `quick` up to
# the thirteenth round, so each row reruns as it ran; max_steps comes from the budget). "running": the
# reverse cycle normalises with batch norm's running statistics (the network users get), not the batch's.
R = ["train.reverse_norm_stats=running"]
POST = ["train.reverse_z=posterior"]
COS = ["train.lr_schedule=cosine"]
BIGDEC = ["model.dec_channels=[128,64,32,16]", "model.dec_hidden=512"]
BIGDEC2 = ["model.dec_channels=[256,128,64,32]", "model.dec_hidden=1024"]
FILM_KL1 = ["model.dec_film=true", "train.kl_coef=1.0"]
JOINT = ["train.reverse_decoder_step=forward"]
# The second quick preset (`--preset quick-v2`, the thirteenth round's bigdec-kl2-revdec) as overrides of PRESET
# (quick-v1): the base of the fourteenth to eighteenth rounds. QUICK_V3: the third quick preset, the nineteenth
# round's bigdec2-kl2-revdec at ROUND_BUDGET_S (the epochs' cap lifted so that the budget ends every variant built on
# it), the base of the twentieth and twenty-first rounds; the latter's rev3-rc30 is today's quick preset.
KL2_REVDEC = ["train.kl_coef=2.0", "train.reverse_updates=all"]
QUICK_V2 = BIGDEC + KL2_REVDEC
QUICK_V3 = BIGDEC2 + KL2_REVDEC + ["train.epochs=10"]
REV3 = ["train.reverse_every=3", "train.reverse_cycle_coef=30"]  # today's quick preset on top of QUICK_V3
CC_P16 = ["train.cross_cycle_coef=0.5", "train.cross_cycle_pairs=16"]
ZPERM = ["train.z_view=channel_permute"]
EMA = "train.ema_decay="
# In order of priority: when a machine cannot fit them all (``--adapt-at``), the last ones are dropped.
VARIANTS: dict[str, list[str]] = {
    "R-kl1-post": R + POST + ["train.kl_coef=1.0"],
    "R-kl0.3-post": R + POST + ["train.kl_coef=0.3"],
    "R-kl1": R + ["train.kl_coef=1.0"],
    "base": [],
    "R-kl1-post-cos-bigdec": R + POST + COS + BIGDEC + ["train.kl_coef=1.0"],
    "R-kl0.3-post-cos": R + POST + COS + ["train.kl_coef=0.3"],
    "R-kl1-cos": R + COS + ["train.kl_coef=1.0"],
    "R-kl1-bigdec": R + BIGDEC + ["train.kl_coef=1.0"],
    "R": R,
    "R-kl0.3": R + ["train.kl_coef=0.3"],
    "R-kl0.3-post-rc30": R + POST + ["train.kl_coef=0.3", "train.reverse_cycle_coef=30.0"],
    "encnone-kl1": ["model.norm=none", "train.kl_coef=1.0"],
    "R-kl1-post-warm": R + POST + ["train.kl_coef=1.0", "train.kl_warmup_steps=2000"],
    "R-kl1-z32-s128": R + ["train.kl_coef=1.0", "model.style_dim=32", "model.class_dim=128"],
    "R-kl1-cos-lr2e-3": R + COS + ["train.kl_coef=1.0", "train.lr=2e-3"],
    "R-kl1-b64-lr2e-3-cos": R + COS + ["train.kl_coef=1.0", "train.lr=2e-3", "train.batch_size=64"],
    # Second round, without R (which collapsed z): the first round's knobs on the preset's own setting.
    "kl1": ["train.kl_coef=1.0"],
    "post": POST,
    "cos": COS,
    "kl1-post-cos-bigdec": POST + COS + BIGDEC + ["train.kl_coef=1.0"],
    # Fourth round: a floor on z's information (capacity target, nats per image, reached at step 5,000).
    "cap25": ["train.kl_capacity=25", "train.kl_capacity_steps=5000"],
    "cap50": ["train.kl_capacity=50", "train.kl_capacity_steps=5000"],
    # Sixth round: s modulates every decoder feature map (FiLM), alone and with the richer z of KL 1.
    "film": ["model.dec_film=true"],
    "film-kl1": ["model.dec_film=true", "train.kl_coef=1.0"],
    # Seventh round: the reverse cycle trains the decoder too (a swap is a cross-identity (z, s) the paper's decoder
    # never trains on).
    "revdec": ["train.reverse_updates=all"],
    "film-kl1-revdec": ["model.dec_film=true", "train.kl_coef=1.0", "train.reverse_updates=all"],
    # Eighth round: the decoder-training reverse cycle against KL 1's identity leak, with the paper's and the wider decoder.
    "kl1-revdec": ["train.kl_coef=1.0", "train.reverse_updates=all"],
    "bigdec-kl1-revdec": BIGDEC + ["train.kl_coef=1.0", "train.reverse_updates=all"],
    # Ninth round: the reverse cycle's identity term (generated images re-encode to their s; trains the decoder only).
    "revid1": ["train.reverse_identity_coef=1.0"],
    "kl1-revid1": ["train.kl_coef=1.0", "train.reverse_identity_coef=1.0"],
    "revid0.1": ["train.reverse_identity_coef=0.1"],
    "kl1-revid0.1": ["train.kl_coef=1.0", "train.reverse_identity_coef=0.1"],
    # Tenth round: FiLM with KL 1 on the wider decoder.
    "bigdec-film-kl1": BIGDEC + ["model.dec_film=true", "train.kl_coef=1.0"],
    # Eleventh round: the decoder's reverse-cycle terms in the forward cycle's Adam step, where their weight counts.
    "film-kl1-jid0.1": FILM_KL1 + JOINT + ["train.reverse_identity_coef=0.1"],
    "film-kl1-jall": FILM_KL1 + JOINT + ["train.reverse_updates=all"],
    "film-kl1-jid1": FILM_KL1 + JOINT + ["train.reverse_identity_coef=1.0"],
    # Twelfth round (the lr decay now at the same fraction of every variant's steps): the wider decoder on the preset.
    "bigdec": BIGDEC,
    # Thirteenth round: the twelfth round's best (bigdec-kl1-revdec, identity 2.4x chance) with more pressure on z.
    "bigdec-kl2-revdec": QUICK_V2,
    "bigdec-kl1-revdec-rc20": BIGDEC + ["train.kl_coef=1.0", "train.reverse_updates=all", "train.reverse_cycle_coef=20.0"],
    # Fourteenth round: the preset (bigdec-kl2-revdec) with more pose in z: a capacity floor of 25 nats, or the
    # reverse cycle's weight 20 (which kept more pose with KL 1).
    "bigdec-kl2-revdec-cap25": QUICK_V2 + ["train.kl_capacity=25", "train.kl_capacity_steps=5000"],
    "bigdec-kl2-revdec-rc20": QUICK_V2 + ["train.reverse_cycle_coef=20.0"],
    # The preset with the reverse cycle's anchor: generated images re-encode to the z mean the z was drawn around.
    "bigdec-kl2-revdec-anc1": QUICK_V2 + ["train.reverse_anchor_coef=1.0"],
    "bigdec-kl2-revdec-anc10": QUICK_V2 + ["train.reverse_anchor_coef=10.0"],
    # Fifteenth round: the preset under a cosine schedule (the best reconstruction of the second round, 23.4 dB, had
    # one), and with KL 1.5 between KL 1's pose (and its identity trace) and KL 2's.
    "bigdec-kl2-revdec-cos": BIGDEC + COS + KL2_REVDEC,
    "bigdec-kl1.5-revdec-cos": BIGDEC + COS + ["train.kl_coef=1.5", "train.reverse_updates=all"],
    # Sixteenth round: the preset with a decoder twice as wide again (256-128-64-32 channels, 1,024 hidden), at a
    # larger budget (SHARP_BUDGET_S: 12,000 steps); train.epochs=10 so the budget, not quick-v1's 4 epochs, ends it.
    "bigdec2-kl2-revdec": QUICK_V3,
    # Seventeenth round: the preset with z of 8 dimensions (it keeps 5-7 active of 64) and a lower KL, so the nats
    # a lower KL frees sharpen the pose dimensions instead of opening new ones for identity (KL 1 on 64: 2.4x chance).
    "bigdec-kl1-revdec-z8": BIGDEC + ["train.kl_coef=1.0", "train.reverse_updates=all", "model.style_dim=8"],
    "bigdec-kl0.5-revdec-z8": BIGDEC + ["train.kl_coef=0.5", "train.reverse_updates=all", "model.style_dim=8"],
    "bigdec-kl2-revdec-z8": QUICK_V2 + ["model.style_dim=8"],
    # Eighteenth round: the preset with DRIT's cross-cycle (two characters swapped and swapped back must come back),
    # a pixel target for the cross-character (z, s) pairs a swap decodes; on every pair of the batch, or on 16 of 32.
    "bigdec-kl2-revdec-cc2": QUICK_V2 + ["train.cross_cycle_coef=2.0"],
    "bigdec-kl2-revdec-cc2-p16": QUICK_V2 + ["train.cross_cycle_coef=2.0", "train.cross_cycle_pairs=16"],
    # ... and joining at step 4,500 only (the preset's reconstruction first, then the swap's pixel target), weight 2
    # or 0.5 on 16 pairs.
    "bigdec-kl2-revdec-cc2-p16-from4500": QUICK_V2 + ["train.cross_cycle_coef=2.0", "train.cross_cycle_pairs=16",
                                                    "train.cross_cycle_start=4500"],
    "bigdec-kl2-revdec-cc0.5-p16-from4500": QUICK_V2 + ["train.cross_cycle_coef=0.5", "train.cross_cycle_pairs=16",
                                                      "train.cross_cycle_start=4500"],
    # ... and training the decoder only (codes detached, the encoder a fixed judge), from the start, weight 2 or 0.5.
    "bigdec-kl2-revdec-ccdec2-p16": QUICK_V2 + ["train.cross_cycle_coef=2.0", "train.cross_cycle_pairs=16",
                                              "train.cross_cycle_updates=decoder"],
    "bigdec-kl2-revdec-ccdec0.5-p16": QUICK_V2 + ["train.cross_cycle_coef=0.5", "train.cross_cycle_pairs=16",
                                                "train.cross_cycle_updates=decoder"],
    # Nineteenth round: bigdec2-kl2-revdec at ROUND_BUDGET_S (5,056 steps), the third quick preset. Twentieth: that
    # preset with a doubled learning rate, or with batch 16 (more, cheaper steps for the same budget).
    "bigdec2-kl2-revdec-lr2e-3": QUICK_V3 + ["train.lr=2e-3"],
    "bigdec2-kl2-revdec-b16": QUICK_V3 + ["train.batch_size=16"],
    # Twenty-first round: the reverse cycle (with the decoder's terms, 50-60 % of the preset's step) every second or
    # third step at two or three times the weight, the same mean pressure, so the budget buys more steps.
    "bigdec2-kl2-revdec-rev2-rc20": QUICK_V3 + ["train.reverse_every=2", "train.reverse_cycle_coef=20"],
    "bigdec2-kl2-revdec-rev3-rc30": QUICK_V3 + ["train.reverse_every=3", "train.reverse_cycle_coef=30"],
    # Twenty-second round: every fourth or sixth step at four or six times the weight (more steps again).
    "bigdec2-kl2-revdec-rev4-rc40": QUICK_V3 + ["train.reverse_every=4", "train.reverse_cycle_coef=40"],
    "bigdec2-kl2-revdec-rev6-rc60": QUICK_V3 + ["train.reverse_every=6", "train.reverse_cycle_coef=60"],
    # Twenty-third round: the preset (rev3-rc30) with z read from channel-permuted copies of the images
    # (train.z_view), at the preset's KL 2 and at KL 1 (whether colour kept out of z lets a lower KL sharpen pose).
    "bigdec2-kl2-revdec-rev3-rc30-zperm": QUICK_V3 + REV3 + ZPERM,
    "bigdec2-kl1-revdec-rev3-rc30-zperm": QUICK_V3 + REV3 + ZPERM + ["train.kl_coef=1.0"],
    # Twenty-fourth round: the preset with a moving average of its weights (train.ema_decay), which evaluation
    # scores; training is the preset's step for step, so `ccvae evaluate RUN --weights live` on a copy of each run
    # gives the paired preset run of the same seed.
    "bigdec2-kl2-revdec-rev3-rc30-ema999": QUICK_V3 + REV3 + [EMA + "0.999"],
    "bigdec2-kl2-revdec-rev3-rc30-ema9995": QUICK_V3 + REV3 + [EMA + "0.9995"],
    # ... averaging only the steps after the lr decay (0.995: 0.995 ** 1,407 = 0.1 % of the average from before it),
    # and the average instead of the decay (a constant lr; the live weights of that run are the preset without it).
    "bigdec2-kl2-revdec-rev3-rc30-ema995": QUICK_V3 + REV3 + [EMA + "0.995"],
    "bigdec2-kl2-revdec-rev3-rc30-nodecay-ema999": QUICK_V3 + REV3 + [EMA + "0.999", "train.lr_decay_factor=1.0"],
    # Twenty-fifth round: DRIT's cross-cycle (eighteenth round) on today's preset, whose reconstruction (26 dB) no
    # longer limits the swap as the eighteenth round's (22.8 dB) did: weight 0.5 on 16 of the 32 pairs, joining at
    # step 5,000, before the lr decay. The first row prices its step (the cross-cycle from step 0).
    "bigdec2-kl2-revdec-rev3-rc30-cc0.5-p16": QUICK_V3 + REV3 + CC_P16,
    "bigdec2-kl2-revdec-rev3-rc30-cc0.5-p16-from5000": QUICK_V3 + REV3 + CC_P16 + ["train.cross_cycle_start=5000"],
    # Twenty-sixth round: the preset with a critic of I(z; s) charged to the encoder (train.independence_coef,
    # FactorVAE's density-ratio trick), a signal on cross-character pairs that needs no decoder pass.
    "bigdec2-kl2-revdec-rev3-rc30-ind20": QUICK_V3 + REV3 + ["train.independence_coef=20.0"],
    # Twenty-seventh round: the critic with a lower KL, so that the nats it frees go to pose (the posterior noise
    # that keeps pose from sampled z below the z mean's) while the critic keeps the character out of z, which every
    # lower KL without it let in (seventeenth and twenty-third rounds).
    "bigdec2-kl1-revdec-rev3-rc30-ind20": QUICK_V3 + REV3 + ["train.independence_coef=20.0", "train.kl_coef=1.0"],
    "bigdec2-kl0.5-revdec-rev3-rc30-ind20": QUICK_V3 + REV3 + ["train.independence_coef=20.0", "train.kl_coef=0.5"],
}


def _ccvae(*args: str) -> list[str]:
    return [sys.executable, "-m", "ccvae", *args]


def cmd_time(args: argparse.Namespace) -> None:
    """Median CPU seconds per training step of each variant (``--steps`` steps after a warm-up)."""
    import torch

    from ccvae.config import build_config
    from ccvae.data.dataset import SpritesDataset
    from ccvae.hardware import cpu_summary
    from ccvae.train import Trainer

    data = SpritesDataset.load(args.data)
    out = {"cpu": cpu_summary(), "threads": torch.get_num_threads(), "steps": args.steps, "s_per_step": {}}
    for name, sets in VARIANTS.items():
        cfg = build_config(PRESET, overrides=sets)
        trainer = Trainer(cfg, data, Path("/nonexistent"), torch.device("cpu"), quiet=True)
        bs = cfg.train.batch_size
        out["s_per_step"][name] = median_step_s(trainer, args.steps)
        print(f"{name:28s} {1000 * out['s_per_step'][name]:7.1f} ms/step (batch {bs})", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))


def cmd_ratio(args: argparse.Namespace) -> None:
    """Step-time ratios of ``--variants`` to ``--reference``: their steps timed interleaved, ``--rounds`` rounds of
    ``--steps`` steps each in one process, so that machine drift hits every variant alike. Prints the medians, the
    ratios and the s/step to put in the times file (the reference's assigned figure times the ratio)."""
    import torch

    from ccvae.config import build_config
    from ccvae.data.dataset import SpritesDataset
    from ccvae.hardware import cpu_summary
    from ccvae.train import Trainer

    torch.set_num_threads(args.threads)
    data = SpritesDataset.load(args.data)
    names = [args.reference, *args.variants.split(",")]
    trainers = {n: Trainer(build_config(PRESET, overrides=VARIANTS[n]), data, Path("/nonexistent"),
                           torch.device("cpu"), quiet=True) for n in names}
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        for n in names:
            times[n].append(median_step_s(trainers[n], args.steps, warmup=3 if r == 0 else 0))
    assigned = json.loads(Path(args.times).read_text())["s_per_step"]
    ref = statistics.median(times[args.reference])
    print(f"{cpu_summary()}; {args.threads} thread(s); {args.rounds} rounds of {args.steps} steps")
    for n in names:
        med = statistics.median(times[n])
        print(f"{n:40s} {1000 * med:7.1f} ms/step  x {med / ref:.3f}  -> {assigned[args.reference] * med / ref:.5f} s "
              f"assigned ({int(ROUND_BUDGET_S / (assigned[args.reference] * med / ref))} steps in {ROUND_BUDGET_S} s)")


def median_step_s(trainer, steps: int, warmup: int = 3) -> float:
    """Median wall seconds of ``trainer.train_step`` over ``steps`` steps of the epoch order, after a warm-up."""
    order, bs = trainer.epoch_order(0), trainer.cfg.train.batch_size
    times = []
    for i in range(steps + warmup):
        t0 = time.perf_counter()
        trainer.train_step(order[i * bs:(i + 1) * bs])  # advances trainer.step, as in `ccvae train`
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _launch(name: str, seed: int, steps: int, args: argparse.Namespace) -> subprocess.Popen:
    run = Path(args.out) / f"{name}__seed{seed}"
    sets = [a for s in VARIANTS[name] + decay_sets(VARIANTS[name], steps, args.decay_at) for a in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    script = (f"{' '.join(map(_q, _ccvae('train', '--preset', PRESET, *sets, '--max-steps', str(steps), '--seed', str(seed), '--out', str(run), '--device', args.device, '--quiet', '--data', args.data)))}"
              f" && {' '.join(map(_q, _ccvae('evaluate', str(run), '--device', args.device, '--quiet', '--data', args.data)))}")
    log = open(Path(args.out) / f"{name}__seed{seed}.log", "w")
    return subprocess.Popen(["bash", "-c", script], stdout=log, stderr=subprocess.STDOUT, env=env)


def decay_sets(sets: list[str], steps: int, decay_at: float) -> list[str]:
    """The step schedule's decay at ``decay_at`` of a variant's own steps (not cosine, which spans the run).

    Without it the decay stays at the preset's epoch 3 (step 8,343), which a variant slower than the preset
    never reaches in the budget (the first eleven rounds: 7,352-8,283 steps for the costlier ones)."""
    if decay_at <= 0 or "train.lr_schedule=cosine" in sets:
        return []
    return [f"train.lr_decay_steps={round(decay_at * steps)}"]


def _q(s: str) -> str:
    import shlex
    return shlex.quote(s)


def _last_step(run: Path) -> int:
    try:
        lines = (run / "metrics.csv").read_text().strip().splitlines()
        return int(lines[-1].split(",")[1]) if len(lines) > 1 else 0
    except (OSError, ValueError, IndexError):
        return 0


def _run_batch(jobs: list[tuple[str, int]], times: dict, args: argparse.Namespace, deadline: float) -> None:
    """Run ``jobs`` ``--parallel`` at a time. At ``--adapt-at`` seconds, if the training steps done so far
    say the batch cannot finish (training plus ``--eval-s``) before the deadline, drop the jobs at the
    end of the list until the rest can (the machine's throughput is shared by the jobs running)."""
    pending = list(jobs)
    running: list[tuple[subprocess.Popen, str, int, float, int]] = []
    t_start, adapted = time.time(), False
    while pending or running:
        while pending and len(running) < args.parallel:
            name, seed = pending.pop(0)
            steps = int(args.budget_s / times[name])
            running.append((_launch(name, seed, steps, args), name, seed, time.time(), steps))
            print(f"started {name} seed {seed}: {steps} steps", flush=True)
        time.sleep(2)
        for job in list(running):
            proc, name, seed, t0, _ = job
            if proc.poll() is not None:
                running.remove(job)
                print(f"finished {name} seed {seed}: exit {proc.returncode} in {time.time() - t0:.0f} s", flush=True)
        elapsed = time.time() - t_start
        if args.adapt_at and not adapted and elapsed > args.adapt_at and running:
            adapted = True
            done = sum(_last_step(Path(args.out) / f"{n}__seed{s}") for _, n, s, _, _ in running)
            rate = done / elapsed  # steps/s of the whole machine
            left = sum(st for *_, st in running) + sum(int(args.budget_s / times[n]) for n, _ in pending) - done
            room = deadline - time.time() - args.eval_s
            print(f"adapt: {done} steps in {elapsed:.0f} s = {rate:.0f} steps/s; {left} left; {room:.0f} s of room",
                  flush=True)
            while rate > 0 and left / rate > room and (pending or len(running) > 1):
                if pending:
                    name, seed = pending.pop()
                    left -= int(args.budget_s / times[name])
                else:
                    proc, name, seed, _, st = running.pop()
                    proc.kill()
                    left -= st - _last_step(Path(args.out) / f"{name}__seed{seed}")
                print(f"dropped {name} seed {seed}: no time for it on this machine", flush=True)
        if time.time() > deadline:
            for proc, name, seed, _, _ in running:
                proc.kill()
                print(f"killed {name} seed {seed} at the deadline", flush=True)
            return


def cmd_run(args: argparse.Namespace) -> None:
    times = json.loads(Path(args.times).read_text())["s_per_step"]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    start = time.time()
    names = args.only.split(",") if args.only else list(VARIANTS)
    seeds = [int(x) for x in args.seeds.split(",")]
    _run_batch([(n, sd) for sd in seeds for n in names], times, args, start + args.deadline_s)
    rows = collect(Path(args.out))
    best = [r["variant"] for r in _ranked(rows) if r["seed"] == 0][:args.finalists]
    if args.finalists and time.time() < start + args.deadline_s - args.phase2_min_s:
        _run_batch([(n, 1) for n in best], times, args, start + args.deadline_s)
    write_table(Path(args.out), times, args.budget_s)


def _ranked(rows: list[dict]) -> list[dict]:
    ok = [r for r in rows if "swap_psnr" in r]
    return sorted(ok, key=lambda r: (not r["leak_ok"], -r["swap_psnr"]))


def collect(out: Path) -> list[dict]:
    rows = []
    for mj in sorted(out.glob("*__seed*/eval/metrics.json")):
        run = mj.parent.parent
        name, seed = run.name.rsplit("__seed", 1)
        m = json.loads(mj.read_text())
        c = m["classifiers"]
        ia, ih, po = c["identity_all"], c["identity_heldout"], c["pose"]
        leak_ok = ia["z"]["test_acc"] <= 2 * ia["chance"] and ih["z"]["test_acc"] <= 2 * ih["chance"]
        rows.append({
            "variant": name, "seed": int(seed), "steps": m["run"]["steps"],
            "swap_psnr": m["swap"]["swap_psnr"], "recon_psnr": m["swap"]["reconstruction_psnr"],
            "id_heldout_s": ih["s"]["test_acc"], "id_all_s": ia["s"]["test_acc"],
            "id_heldout_z": ih["z"]["test_acc"], "id_all_z": ia["z"]["test_acc"],
            "id_heldout_zmean_std": ih["z_mean_std"]["test_acc"],
            "pose_z": po["z"]["test_acc"], "pose_zmean": po["z_mean"]["test_acc"], "pose_s": po["s"]["test_acc"],
            "active_units": m["latents"]["active_units"], "leak_ok": leak_ok,
        })
    return rows


def write_table(out: Path, times: dict, budget_s: float) -> None:
    rows = collect(out)
    lines = ["| variant | seed | CPU ms/step | steps | swap PSNR | recon PSNR | id unseen s | id all s | "
             "id unseen z (sampled) | id all z (sampled) | id unseen z mean std. | pose z | pose s | active z |",
             "|" + "---|" * 14]
    for r in _ranked(rows):
        lines.append(
            f"| {r['variant']} | {r['seed']} | {1000 * times[r['variant']]:.0f} | {r['steps']} | {r['swap_psnr']:.2f} | "
            f"{r['recon_psnr']:.2f} | {100 * r['id_heldout_s']:.1f} | {100 * r['id_all_s']:.1f} | "
            f"{100 * r['id_heldout_z']:.1f} | {100 * r['id_all_z']:.2f} | {100 * r['id_heldout_zmean_std']:.1f} | "
            f"{100 * r['pose_z']:.1f} | {100 * r['pose_s']:.1f} | {r['active_units']} |")
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text)
    (out / "rows.json").write_text(json.dumps(rows, indent=2))
    print(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("time")
    t.add_argument("--data", default=os.environ.get("CCVAE_DATA", "../shared/data/sprites/sprites60.npz"))
    t.add_argument("--steps", type=int, default=15)
    t.add_argument("--out", required=True)
    r = sub.add_parser("run")
    r.add_argument("--data", default=os.environ.get("CCVAE_DATA", "../shared/data/sprites/sprites60.npz"))
    r.add_argument("--times", required=True)
    r.add_argument("--budget-s", type=float, default=1740.0, help="CPU seconds of training per variant")
    r.add_argument("--device", default="auto")
    r.add_argument("--parallel", type=int, default=1)
    r.add_argument("--threads", type=int, default=1, help="torch threads of each run (a run alone: the cores)")
    r.add_argument("--finalists", type=int, default=4)
    r.add_argument("--only", help="comma-separated variant names (default: all)")
    r.add_argument("--seeds", default="0", help="comma-separated seeds of the first phase")
    r.add_argument("--deadline-s", type=float, default=1e9, help="kill what still runs after this many seconds")
    r.add_argument("--phase2-min-s", type=float, default=240.0, help="start the seed-1 finalists only with this much left")
    r.add_argument("--adapt-at", type=float, default=0.0, help="seconds after which to drop what cannot finish")
    r.add_argument("--eval-s", type=float, default=90.0, help="time an evaluation needs, for --adapt-at")
    r.add_argument("--decay-at", type=float, default=DECAY_AT,
                   help="the lr decay at this fraction of each variant's steps (the preset's run: step 8,343 of "
                        "10,029); 0: at the preset's epoch 3 whatever the steps (rounds one to eleven)")
    r.add_argument("--out", required=True)
    ra = sub.add_parser("ratio")
    ra.add_argument("--data", default=os.environ.get("CCVAE_DATA", "../shared/data/sprites/sprites60.npz"))
    ra.add_argument("--reference", default="bigdec2-kl2-revdec-rev3-rc30")
    ra.add_argument("--variants", required=True, help="comma-separated variant names")
    ra.add_argument("--times", default="docs/quick-study-cpu-times.json")
    ra.add_argument("--rounds", type=int, default=3)
    ra.add_argument("--steps", type=int, default=24, help="steps a round (a multiple of every reverse_every)")
    ra.add_argument("--threads", type=int, default=1)
    tb = sub.add_parser("table")
    tb.add_argument("--times", required=True)
    tb.add_argument("--budget-s", type=float, default=1740.0)
    tb.add_argument("--out", required=True)
    args = p.parse_args()
    if args.cmd == "time":
        cmd_time(args)
    elif args.cmd == "run":
        cmd_run(args)
    elif args.cmd == "ratio":
        cmd_ratio(args)
    else:
        write_table(Path(args.out), json.loads(Path(args.times).read_text())["s_per_step"], args.budget_s)


if __name__ == "__main__":
    main()
