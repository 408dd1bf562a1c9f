"""Time one training step of our Learner against a plain PyTorch loop: same timm model, same batches, same optimiser.

    python bench/train_step.py                       # CPU: resnet34, 64 px, batch 32
    python bench/train_step.py --device cuda --size 224 --bs 128   # on a GPU (ours then adds its mixed precision + channels_last;
                                                                    # the baseline does the same with torch.autocast + channels_last)

Both sides get the same pre-made batches (tensors already normalised and on the device, no data loading) and start
from the same weights. Ours is `herbarium_learner` + fastai's `fit` (callbacks, recorder, its default optimiser);
the baseline is the same step written out by hand (forward, loss, backward, optimiser step, zero_grad) with the same
optimiser class and hyper-parameters. The two are interleaved step by step: a callback at the very end of each of our
steps runs one plain step, so that load from other jobs on a shared machine falls on both alike. Our step's time runs
from the end of the previous plain step to the end of ours (fastai's loop, batch fetch and every callback included).
Reported: the median of the per-pair ratios, and the ratio of the totals, after warm-up pairs.
"""
import argparse, copy, statistics, sys, tempfile, time, warnings
from pathlib import Path

warnings.filterwarnings('ignore')
import torch
from torch import nn

from fastai.callback.core import Callback
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader

from herbarium_fastai.data import herbarium_dataloaders
from herbarium_fastai.learner import herbarium_learner
from herbarium_fastai.metadata import load_metadata
from herbarium_fastai.synth import make_synthetic_dataset

def parse():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--arch', default='resnet34'); p.add_argument('--size', type=int, default=64)
    p.add_argument('--bs', type=int, default=32); p.add_argument('--classes', type=int, default=500)
    p.add_argument('--steps', type=int, default=30, help='timed step pairs'); p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--device', default='cpu')
    p.add_argument('--threads', type=int, default=None, help='torch threads (default: torch decides)')
    return p.parse_args()

class Interleave(Callback):
    "After each of our training steps, time it and run (and time) one plain step"
    order = 1000  # after every other callback's after_batch
    def __init__(self, plain_step, sync): self.plain_step, self.sync, self.ours, self.plain = plain_step, sync, [], []
    def before_train(self): self.sync(); self.mark = time.perf_counter()
    def after_batch(self):
        if not self.training: return
        self.sync(); end = time.perf_counter()
        self.ours.append(end - self.mark)
        self.plain.append(self.plain_step(self.iter))
        self.mark = time.perf_counter()

def main():
    args = parse()
    if args.threads: torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == 'cuda'
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    # a tiny dataset only to build our learner (vocab, transforms); the timed batches are pre-made tensors
    tmp = Path(tempfile.mkdtemp())
    make_synthetic_dataset(tmp/'data', species=8, seed=0, size=32, style='flat', workers=0, test_per_species=1)
    dls = herbarium_dataloaders(load_metadata(tmp/'data'/'train'), size=args.size, bs=args.bs, num_workers=0, device=device)
    learn = herbarium_learner(dls, args.arch, pretrained=False, path=tmp, metrics=[])
    # widen the head to --classes outputs (a long-tail head is a real part of the step's cost)
    last = learn.model[-1][-1]
    learn.model[-1][-1] = nn.Linear(last.in_features, args.classes, bias=last.bias is not None).to(device)
    learn.model.to(device)
    generator = torch.Generator().manual_seed(0)
    n = args.warmup + args.steps
    batches = [(torch.randn(args.bs, 3, args.size, args.size, generator=generator).to(device),
                torch.randint(0, args.classes, (args.bs,), generator=generator).to(device)) for _ in range(n)]
    learn.dls = DataLoaders(DataLoader(batches, bs=None, device=device), DataLoader([], bs=None, device=device), device=device)
    plain_model = copy.deepcopy(learn.model).to(device)
    learn.create_opt()
    lr = 1e-4

    # baseline: the same optimiser class and hyper-parameters as the Learner's, in a plain loop
    fastai_opt = learn.opt_func
    plain_opt = fastai_opt(plain_model.parameters() if not hasattr(fastai_opt, 'func') else plain_model.parameters(), lr=lr)
    loss_func = nn.CrossEntropyLoss()
    channels_last = any(type(cb).__name__ == 'ChannelsLast' for cb in learn.cbs)
    amp = any(type(cb).__name__ == 'MixedPrecision' for cb in learn.cbs)
    amp_dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
    if channels_last: plain_model = plain_model.to(memory_format=torch.channels_last)
    scaler = torch.amp.GradScaler('cuda', enabled=amp and amp_dtype == torch.float16)

    def plain_step(i):
        x, y = batches[i]
        sync(); start = time.perf_counter()
        plain_model.train()
        if channels_last: x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
            loss = loss_func(plain_model(x), y)
        scaler.scale(loss).backward()
        scaler.step(plain_opt); scaler.update()
        plain_opt.zero_grad()
        sync()
        return time.perf_counter() - start

    pairs = Interleave(plain_step, sync)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, lr, cbs=[pairs])
    ours, plain = pairs.ours[args.warmup:], pairs.plain[args.warmup:]
    ratios = [o / p for o, p in zip(ours, plain)]
    print(f"{args.arch} at {args.size} px, batch {args.bs}, {args.classes} classes, device {device}, "
          f"optimiser {type(plain_opt).__module__}.{type(plain_opt).__name__}, amp {amp}, channels_last {channels_last}, "
          f"torch threads {torch.get_num_threads()}; {len(ours)} interleaved step pairs (+{args.warmup} warm-up)")
    print(f"{'':24}{'median s/step':>14}{'min s/step':>12}{'total s':>10}")
    print(f"{'plain PyTorch loop':24}{statistics.median(plain):14.4f}{min(plain):12.4f}{sum(plain):10.2f}")
    print(f"{'ours (fastai Learner)':24}{statistics.median(ours):14.4f}{min(ours):12.4f}{sum(ours):10.2f}")
    ratio = statistics.median(ratios)
    print(f"ratio ours/plain: median of pairs {ratio:.3f}, totals {sum(ours) / sum(plain):.3f}, "
          f"best steps {min(ours) / min(plain):.3f}; pair ratios 10-90%: {sorted(ratios)[len(ratios) // 10]:.3f}-"
          f"{sorted(ratios)[len(ratios) * 9 // 10]:.3f}")
    print(f"target ours <= 1.10 x plain (median of pairs): {'MET' if ratio <= 1.10 else 'NOT MET'}")
    return 0

if __name__ == '__main__': sys.exit(main())
