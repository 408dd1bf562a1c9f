"""GPU throughput of our training recipe against a plain AMP + channels_last loop, and how long the GPU waits for data.

    python bench/gpu.py                      # on a lent GPU: resnet34 at 224 px; about 2-3 minutes on an H100
    python bench/gpu.py --device cpu --images 64 --size 32 --bs 8 --species 4 --plain-steps 4 --arch resnet18   # smoke test

1. Writes synthetic herbarium sheets already presized (longest side 1.5 x size, as our DataBlock resizes them).
2. Ours: `herbarium_dataloaders` (JPEG decode + per-item resize in `--workers` processes, pinned memory, batch
   augmentation on the GPU) + `herbarium_learner` (bf16 or fp16 mixed precision, channels_last) + `fit_one_cycle`.
   A callback times each step (synchronised) and the gap before it: the time the GPU waited for the next batch.
3. The DataLoader alone (no model): the rate it can feed.
4. Plain: the same model and optimiser in a `for` loop over batches already on the GPU (no data loading at all),
   `torch.autocast` with the same dtype and channels_last: the compute-bound ceiling.
Images/s of ours vs plain, their ratio, and the data wait are printed side by side.
"""
import argparse, copy, os, statistics, sys, tempfile, time, warnings
from pathlib import Path

warnings.filterwarnings('ignore')
import torch
from torch import nn

from fastai.callback.core import Callback

from herbarium_fastai.data import herbarium_dataloaders
from herbarium_fastai.learner import herbarium_learner
from herbarium_fastai.metadata import load_metadata
from herbarium_fastai.synth import make_synthetic_dataset

def parse():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--device', default='cuda'); p.add_argument('--arch', default='resnet34')
    p.add_argument('--size', type=int, default=224); p.add_argument('--bs', type=int, default=128)
    p.add_argument('--images', type=int, default=4000, help='about this many training images are written')
    p.add_argument('--species', type=int, default=200); p.add_argument('--epochs', type=int, default=2)
    p.add_argument('--workers', type=int, default=os.cpu_count(), help='DataLoader processes (our default: all cores)')
    p.add_argument('--warmup', type=int, default=5, help='first steps left out of the timings (cudnn autotuning)')
    p.add_argument('--plain-steps', type=int, default=60); p.add_argument('--data', default=None, help='dataset folder (default: a temp folder)')
    return p.parse_args()

class StepClock(Callback):
    "Per training step: seconds waiting for the batch (since the previous step ended) and seconds computing it"
    order = 100
    def __init__(self, sync): self.sync, self.waits, self.steps, self.sizes, self.last_end = sync, [], [], [], None
    def before_epoch(self): self.last_end = time.perf_counter()
    def before_batch(self):
        if not self.training: return
        self.start = time.perf_counter()
        self.waits.append(self.start - self.last_end)
    def after_batch(self):
        if not self.training: return
        self.sync(); self.last_end = time.perf_counter()
        self.steps.append(self.last_end - self.start); self.sizes.append(len(self.yb[0]))
    def before_validate(self): self.sync()
    def after_validate(self): self.last_end = time.perf_counter()

def main():
    args = parse()
    t0 = time.time()
    device = torch.device(args.device)
    cuda = device.type == 'cuda'
    if cuda: torch.backends.cudnn.benchmark = True
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    dest = Path(args.data or tempfile.mkdtemp(prefix='herbarium-gpu-bench-'))/'data'
    per_species = max(3, args.images // args.species)
    if not (dest/'train'/'metadata.json').exists():
        made = make_synthetic_dataset(dest, species=args.species, size=int(args.size * 1.5), min_per_species=per_species,
                                      max_per_species=per_species, test_per_species=1, supersample=1, workers=args.workers or None)
        print(f"wrote {made['train_images']} sheets at {int(args.size * 1.5)} px in {made['seconds']:.1f} s")
    train_df = load_metadata(dest/'train')

    # ours, as `herbarium-train` builds it
    loader_options = dict(num_workers=args.workers, device=device, **(dict(pin_memory=True) if cuda else {}))
    dls = herbarium_dataloaders(train_df, size=args.size, bs=args.bs, arch=args.arch, valid_pct=0.05, **loader_options)
    learn = herbarium_learner(dls, args.arch, pretrained=False, metrics=[])
    plain_model = copy.deepcopy(learn.model).to(device)  # same architecture and starting weights for the baseline
    amp = any(type(cb).__name__ == 'MixedPrecision' for cb in learn.cbs)
    channels_last = any(type(cb).__name__ == 'ChannelsLast' for cb in learn.cbs)
    amp_dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
    print(f"{args.arch} at {args.size} px, batch {args.bs}, {len(dls.train_ds)} training images, {dls.c} species, "
          f"{args.workers} workers, device {device}{' (' + torch.cuda.get_device_name(device) + ')' if cuda else ''}; "
          f"ours: amp {amp} ({amp_dtype if amp else '-'}), channels_last {channels_last}")

    clock = StepClock(sync)
    fit_start = time.perf_counter()
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(args.epochs, 1e-3, cbs=[clock])
    fit_seconds = time.perf_counter() - fit_start
    w = args.warmup if len(clock.steps) > args.warmup + 1 else 0
    waits, steps, sizes = clock.waits[w:], clock.steps[w:], clock.sizes[w:]
    ours_rate = sum(sizes) / (sum(waits) + sum(steps))
    ours_compute_rate = sum(sizes) / sum(steps)
    wait_share = sum(waits) / (sum(waits) + sum(steps))

    # the DataLoader alone
    start, n = time.perf_counter(), 0
    for xb, yb in dls.train:
        n += len(xb)
    sync()
    loader_rate = n / (time.perf_counter() - start)

    # plain: batches already on the device, autocast + channels_last, the same optimiser class
    pool = [(torch.randn(args.bs, 3, args.size, args.size, device=device), torch.randint(0, dls.c, (args.bs,), device=device))
            for _ in range(4)]
    if channels_last: plain_model = plain_model.to(memory_format=torch.channels_last); pool = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in pool]
    plain_opt = learn.opt_func(plain_model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=amp and amp_dtype == torch.float16)
    loss_func = nn.CrossEntropyLoss()
    plain_model.train()
    for i in range(args.warmup + args.plain_steps):
        if i == args.warmup: sync(); start = time.perf_counter()
        x, y = pool[i % len(pool)]
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp): loss = loss_func(plain_model(x), y)
        scaler.scale(loss).backward(); scaler.step(plain_opt); scaler.update(); plain_opt.zero_grad()
    sync()
    plain_rate = args.plain_steps * args.bs / (time.perf_counter() - start)

    print(f"\n{'':44}{'images/s':>12}{'vs plain':>10}")
    print(f"{'plain loop (data already on the device)':44}{plain_rate:12.1f}{1.0:10.2f}")
    print(f"{'ours, compute only (steps, no waits)':44}{ours_compute_rate:12.1f}{ours_compute_rate / plain_rate:10.2f}")
    print(f"{'ours, end to end (steps + data waits)':44}{ours_rate:12.1f}{ours_rate / plain_rate:10.2f}")
    print(f"{'our DataLoader alone (no model)':44}{loader_rate:12.1f}{loader_rate / plain_rate:10.2f}")
    print(f"\nGPU waiting for data (JPEG loading in the workers, transfer, batch augmentation): {sum(waits):.2f} s of {sum(waits) + sum(steps):.2f} s of training steps ({wait_share:.0%}); "
          f"median wait {statistics.median(waits) * 1000:.1f} ms, median step {statistics.median(steps) * 1000:.1f} ms "
          f"over {len(steps)} steps (first {w} left out); fit_one_cycle {args.epochs} epochs with validation: {fit_seconds:.1f} s")
    if cuda: print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")
    print(f"total {time.time() - t0:.0f} s")
    return 0

if __name__ == '__main__': sys.exit(main())
