"""Test macro F1 of three recipes at equal epochs, over seeds: plain fastai written by hand, the kit's default
(from scratch), and the kit fine-tuning the packaged ImageNet EfficientNet-Lite0.

    python bench/quality.py                                   # both data sets, 3 seeds, 8 epochs at 64 px (CPU: ~40 min)
    python bench/quality.py --data digits --seeds 1 --epochs 2   # a smoke run

Data sets, each in the Kaggle 2021 layout with its own test split and labels:
- `synthetic`: `make_synthetic_dataset(species=40, ...)`: drawn sheets of 40 species in 3-24 images (a long tail);
- `digits`: scikit-learn's `load_digits` (1,797 real 8x8 scans of handwritten digits, 10 classes), as 32 px PNGs;
  10 of each class held out for the test split.
- `digits_lt`: the same scans with a long tail (issue 18): the test split as `digits` (10 of each class: balanced, as
  Kaggle's capped test), the training images cut to 167, 107, 69, 44, 28, 18, 12, 7, 5 and 3 of the ten classes
  (56x between the most and the least common; which digit gets which count is seeded): macro F1 on a balanced test
  after a long-tailed training set, the Herbarium situation on real pixels.

Recipes (the same epochs in total; horizontal flips in all three):
- `plain fastai`: `ImageDataLoaders.from_df` (random 20% validation, `Resize(size)`, `aug_transforms()`),
  `vision_learner(resnet34, pretrained=False)`, `lr_find().valley`, `fit_one_cycle(epochs, lr)`;
- `kit default`: `herbarium_fastai.runs.train_run_folder(..., pretrained=False)` with 0.3's defaults (the `quick`
  recipe: no rebalancing; 0.4's default rebalances, which is `kit_crt` below), then `predict_submission` (what
  `herbarium-train DATA --no-pretrained --recipe quick` + `herbarium-predict` do);
- `kit lite0`: the same with `weights='efficientnet-lite0'` (1 frozen epoch + epochs-1).
Printed: test macro F1 mean ± sd over the seeds, and the mean wall time of a run, side by side.

Ablations (`--recipes kit_plain_lr,kit_plain_aug,kit_random_split`): the kit with one choice replaced by plain
fastai's: its learning rate (lr_find's valley over 100 steps), its augmentation (`aug_transforms()`), a random split.
They found why the 0.2 default lost on digits (bench/RESULTS.md).

Image opening (issue 19; `--recipes kit,kit_full_decode,lite0,lite0_full_decode`): the kit's default since 0.4 opens
JPEGs at reduced scale (`decode='reduced'`); `*_full_decode` trains and predicts
with 0.3's pipeline (`decode='full'`: whole images squished to the presize). `--sheet-px 512` draws the synthetic
sheets at 341 x 512 px, so that reduced decoding is used (at 64 px: 1/2 scale for the 96-px presize); at
the default 96 px the sheets are smaller than the presize and no JPEG is reduced.
"""
import argparse, functools, json, statistics, sys, tempfile, time, warnings
from pathlib import Path

warnings.filterwarnings('ignore')
import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

def parse():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data', default='synthetic,digits', help='comma-separated: synthetic, digits, digits_lt')
    p.add_argument('--seeds', type=int, default=3); p.add_argument('--epochs', type=int, default=8)
    p.add_argument('--seed-list', default=None, help='comma-separated seeds to run (instead of 0 .. --seeds - 1)')
    p.add_argument('--size', type=int, default=64); p.add_argument('--bs', type=int, default=32)
    p.add_argument('--recipes', default='plain,kit,lite0'); p.add_argument('--out', default=None, help='JSON of every run')
    p.add_argument('--sheet-px', type=int, default=96, help='long side of the synthetic sheets')
    p.add_argument('--species', type=int, default=40, help='species of the synthetic herbarium')
    return p.parse_args()

def synthetic_data(dest, sheet_px=96, species=40):
    from herbarium_fastai.synth import make_synthetic_dataset
    make_synthetic_dataset(dest, species=species, seed=7, size=sheet_px, min_per_species=3, max_per_species=24, test_per_species=4, workers=2)
    return dest

LONG_TAIL = (167, 107, 69, 44, 28, 18, 12, 7, 5, 3)  # digits_lt: training images of the ten classes, most to least common

def long_tail_keep(target, test, counts=LONG_TAIL, seed=0)->np.ndarray:
    "Which training images a long tail keeps: `counts` shared out over the classes in a seeded order (the test split untouched)"
    rng, keep = np.random.default_rng(seed), test.copy()
    for c, n in zip(rng.permutation(10), counts): keep[rng.choice(np.flatnonzero((target == c) & ~test), n, replace=False)] = True
    return keep

def digits_data(dest, long_tail=False):
    "scikit-learn's digits in the Kaggle 2021 layout: 32 px PNGs, 10 of each class held out with labels (a long tail: `LONG_TAIL`)"
    from PIL import Image
    from sklearn.datasets import load_digits
    from herbarium_fastai.core import write_csv, write_json
    digits = load_digits()
    rng = np.random.default_rng(0)
    test = np.zeros(len(digits.target), bool)
    for c in range(10): test[rng.choice(np.flatnonzero(digits.target == c), 10, replace=False)] = True
    images, keep = {'train': [], 'test': []}, long_tail_keep(digits.target, test) if long_tail else np.ones(len(test), bool)
    for i, (pixels, label) in enumerate(zip(digits.images, digits.target)):
        if not keep[i]: continue
        split = 'test' if test[i] else 'train'
        name = f'images/{label:03d}/{i}.png'
        path = dest/split/name; path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((255 - pixels * 16).clip(0, 255).astype(np.uint8)).resize((32, 32), Image.NEAREST).convert('RGB').save(path)
        images[split].append(dict(id=i, file_name=name, width=32, height=32, license=0, label=int(label)))
    categories = [dict(id=c, name=f'digit {c}', family='Digits', order='Numerals') for c in range(10)]
    strip = lambda recs: [{k: v for k, v in r.items() if k != 'label'} for r in recs]
    write_json(dest/'train'/'metadata.json', dict(images=strip(images['train']), categories=categories, info=dict(year=2021),
               annotations=[dict(id=k, image_id=r['id'], category_id=r['label'], institution_id=0) for k, r in enumerate(images['train'])],
               institutions=[dict(id=0, name='sklearn')], licenses=[]))
    write_json(dest/'test'/'metadata.json', dict(images=strip(images['test']), info=dict(year=2021), licenses=[]))
    write_csv(dest/'test_labels.csv', [(r['id'], r['label']) for r in images['test']], header=('Id', 'category_id'))
    return dest

def plain_fastai(data, seed, epochs, size, bs, out):
    "fastai as its tutorials write it, by hand"
    from fastai.vision.all import ImageDataLoaders, Resize, aug_transforms, vision_learner, accuracy, set_seed
    from herbarium_fastai.metadata import image_paths, load_metadata
    set_seed(seed, reproducible=True)
    train = load_metadata(data/'train', cache=False).assign(path=lambda d: image_paths(d))
    dls = ImageDataLoaders.from_df(train, fn_col='path', label_col='category_id', valid_pct=0.2, seed=seed,
                                   item_tfms=Resize(size), batch_tfms=aug_transforms(), bs=bs, num_workers=0, path='/')  # paths are absolute
    learn = vision_learner(dls, 'resnet34', pretrained=False, metrics=accuracy, path=out)
    lr = learn.lr_find(show_plot=False).valley
    learn.fit_one_cycle(epochs, lr)
    test = load_metadata(data/'test', cache=False)
    preds, _ = learn.get_preds(dl=dls.test_dl(list(image_paths(test))))
    return test.image_id.to_numpy(), np.asarray(dls.vocab)[preds.argmax(1).numpy()]

def random_split(train, seed, valid_pct=0.2):
    """fastai's `RandomSplitter` as `from_df(valid_pct=)` draws it, except that a species it left without a training image gets
    one back (fastai refuses a validation label it never trained on: the least a user of plain fastai must change on a long tail)"""
    from fastai.data.transforms import RandomSplitter
    is_valid = np.zeros(len(train), bool); is_valid[RandomSplitter(valid_pct, seed)(train)[1]] = True
    for species, rows in train.groupby('category_id').indices.items():
        if is_valid[rows].all(): is_valid[rows[0]] = False
    return train.assign(is_valid=is_valid)

def plain_fastai_lite0(data, seed, epochs, size, bs, out):
    "fastai's `fine_tune` of the packaged EfficientNet-Lite0, by hand (the kit's loader maps its weights onto timm's model)"
    from fastai.vision.all import ImageDataLoaders, Normalize, Resize, aug_transforms, vision_learner, accuracy, set_seed
    from herbarium_fastai.learner import load_body_weights, resolve_weights
    from herbarium_fastai.metadata import image_paths, load_metadata
    set_seed(seed, reproducible=True)
    train = random_split(load_metadata(data/'train', cache=False).assign(path=lambda d: image_paths(d)), seed)
    dls = ImageDataLoaders.from_df(train, fn_col='path', label_col='category_id', valid_col='is_valid', item_tfms=Resize(size),
                                   batch_tfms=[*aug_transforms(), Normalize.from_stats([0.5] * 3, [0.5] * 3)], bs=bs, num_workers=0, path='/')
    learn = vision_learner(dls, 'tf_efficientnet_lite0', pretrained=False, normalize=False, metrics=accuracy, path=out)
    load_body_weights(learn.model, resolve_weights('efficientnet-lite0')[0]); learn.freeze()
    learn.fine_tune(epochs - 1, learn.lr_find(show_plot=False).valley)
    test = load_metadata(data/'test', cache=False)
    preds, _ = learn.get_preds(dl=dls.test_dl(list(image_paths(test))))
    return test.image_id.to_numpy(), np.asarray(dls.vocab)[preds.argmax(1).numpy()]

def kit(data, seed, epochs, size, bs, out, weights=None, predict=None, **training):
    "What `herbarium-train` and `herbarium-predict` run (`training`: more training options; `predict`: prediction options)"
    from herbarium_fastai.runs import predict_submission, train_run_folder
    options = dict(weights=weights, epochs=epochs - 1) if weights else dict(pretrained=False, epochs=epochs)
    training = {'rebalance_epochs': 0, **training}  # 0.3's training unless a recipe rebalances
    train_run_folder(data, out, size=size, bs=bs, seed=seed, workers=0, report=False, **options, **training)
    predict_submission(out, data, out/'submission.csv', bs=bs, workers=0, **(predict or {}))
    sub = pd.read_csv(out/'submission.csv')
    return sub.Id.to_numpy(), sub.Predicted.to_numpy()

def with_plain_lr(*args):
    "Ablation: the kit, with plain fastai's learning rate (lr_find's valley over 100 steps)"
    import herbarium_fastai.learner as L
    original = L.find_learning_rate
    L.find_learning_rate = lambda learn, plot=None, num_it=100: float(learn.lr_find(num_it=100, show_plot=False).valley)
    try: return kit(*args)
    finally: L.find_learning_rate = original

def with_plain_augmentation(*args):
    "Ablation: the kit, with plain fastai's `aug_transforms()` (no 0.75 crops, rotation 10)"
    import herbarium_fastai.data as D
    original = D.aug_transforms
    D.aug_transforms = lambda size=None, **_: original(size=size)
    try: return kit(*args)
    finally: D.aug_transforms = original

def with_random_split(*args):
    "Ablation: the kit, with a random 20% validation split instead of 20% of each species"
    import herbarium_fastai.data as D, herbarium_fastai.runs as R
    original = D.long_tail_split
    def random_split(labels, valid_pct=0.2, seed=0, min_train=1):
        return np.random.default_rng(seed).random(len(labels)) < valid_pct
    D.long_tail_split = R.long_tail_split = random_split
    try: return kit(*args)
    finally: D.long_tail_split = R.long_tail_split = original

def with_full_decode(*args, weights=None):
    "The kit with 0.3's image pipeline: every image decoded whole and squished to the presize (`decode='full'`)"
    import functools
    import herbarium_fastai.runs as R
    original = R.dataloaders_from_items
    R.dataloaders_from_items = functools.partial(original, decode='full')  # recorded in model.json: predicted the same way
    try: return kit(*args, weights=weights)
    finally: R.dataloaders_from_items = original

KAGGLE = dict(tta=True, prior_correction=True)  # herbarium-predict's options the README gives for a submission

RECIPES = dict(plain=('plain fastai', plain_fastai), kit=('kit default', kit),
               plain_lite0=('plain fastai lite0', plain_fastai_lite0),  # fastai's fine_tune of the same weights
               kit_kaggle=('kit, README way', functools.partial(kit, predict=KAGGLE)),  # herbarium-train, herbarium-predict --tta --prior-correction
               lite0=('kit lite0', lambda *a: kit(*a, weights='efficientnet-lite0')),
               # ablations: the kit with one of its choices replaced by plain fastai's
               kit_plain_lr=('kit, plain lr', with_plain_lr), kit_plain_aug=('kit, plain aug', with_plain_augmentation),
               kit_random_split=('kit, rnd split', with_random_split),
               # 0.3's image pipeline (decode='full') against the default (issue 19)
               kit_full_decode=('kit, 0.3 decode', with_full_decode),
               lite0_full_decode=('lite0, 0.3 dec.', lambda *a: with_full_decode(*a, weights='efficientnet-lite0')))

# issue 18: each training ingredient alone (and two together) on top of the kit run the README way
INGREDIENTS = dict(la=('logit-adj.', dict(loss='logit-adjusted')), ls=('label smooth.', dict(loss='label-smoothing')),
                   ema=('EMA 0.99', dict(ema=0.99)), mixup=('MixUp', dict(mixup='mixup')), cutmix=('CutMix', dict(mixup='cutmix')),
                   crt=('cRT 2 ep.', dict(rebalance_epochs=2)), la_ema=('l-a + EMA', dict(loss='logit-adjusted', ema=0.99)),
                   la_crt=('l-a + cRT', dict(loss='logit-adjusted', rebalance_epochs=2)),
                   arcface=('sub-c. ArcFace', dict(classifier='subcenter-arcface')))
for key, (title, training) in INGREDIENTS.items():
    RECIPES[f'kit_{key}'] = (f'kit, {title}', functools.partial(kit, predict=KAGGLE, **training))
    RECIPES[f'lite0_{key}'] = (f'lite0, {title}', functools.partial(kit, weights='efficientnet-lite0', predict=KAGGLE, **training))
# multi-scale TTA (the winners' zoomed centre crops, each with its mirror), τ chosen under the same TTA; and τ chosen under the mirror TTA alone
MULTI_SCALE = dict(tta=True, tta_scales=[1.15, 1.3], prior_correction=True)
RECIPES['kit_ms_tta'] = ('kit, ms TTA', functools.partial(kit, predict=MULTI_SCALE, valid_tta=[1, 1.15, 1.3]))
RECIPES['kit_crt_ms_tta'] = ('kit, cRT + ms TTA', functools.partial(kit, predict=MULTI_SCALE, rebalance_epochs=2))
RECIPES['lite0_crt_ms_tta'] = ('lite0, cRT + ms TTA', functools.partial(kit, weights='efficientnet-lite0', predict=MULTI_SCALE, rebalance_epochs=2))
RECIPES['kit_valid_tta'] = ('kit, τ under TTA', functools.partial(kit, predict=KAGGLE, valid_tta=[1]))
RECIPES['lite0_ms_tta'] = ('lite0, ms TTA', functools.partial(kit, weights='efficientnet-lite0', predict=MULTI_SCALE, valid_tta=[1, 1.15, 1.3]))
# the rank heads' variants left unmeasured by issue 12 (bench/RESULTS.md, "Rank heads or not"), each the README way
def with_late_rank_heads(*args, **kwargs):
    "Rank heads whose loss counts only once the body trains (not in the frozen epoch)"
    import herbarium_fastai.taxonomy as T
    original = T.RankLoss.after_loss
    def after_loss(self):
        if any(not p.requires_grad for p in self.learn.model[0].parameters()): return  # the frozen epoch: species loss alone
        original(self)
    T.RankLoss.after_loss = after_loss
    try: return kit(*args, **kwargs)
    finally: T.RankLoss.after_loss = original

def with_rank_heads_after_batchnorm(*args, **kwargs):
    "Rank heads on the pooled features after fastai's head's first BatchNorm (not on the raw pooled features)"
    import herbarium_fastai.taxonomy as T
    original = T.RankHeads.__init__
    def init(self, head, tree, features):
        original(self, head, tree, features)
        self.cut += 1  # (fastai's create_head: pooling, Flatten, BatchNorm1d, Dropout, Linear, ...)
    T.RankHeads.__init__ = init
    try: return kit(*args, **kwargs)
    finally: T.RankHeads.__init__ = original

HEADS = dict(weights='efficientnet-lite0', predict=KAGGLE, taxonomy_heads=True)
RECIPES['lite0_heads'] = ('lite0, rank heads', functools.partial(kit, **HEADS))
RECIPES['lite0_heads01'] = ('lite0, heads w 0.1', functools.partial(kit, **HEADS, rank_loss_weight=0.1))
RECIPES['lite0_heads_late'] = ('lite0, heads late', functools.partial(with_late_rank_heads, **HEADS))
RECIPES['lite0_heads_bn'] = ('lite0, heads a. BN', functools.partial(with_rank_heads_after_batchnorm, **HEADS))
RECIPES['lite0_kaggle'] = ('lite0, README way', functools.partial(kit, weights='efficientnet-lite0', predict=KAGGLE))

def main():
    args = parse()
    root = Path(tempfile.mkdtemp(prefix='herbarium-quality-'))
    rows = []
    for name in args.data.split(','):
        data = synthetic_data(root/name, args.sheet_px, args.species) if name == 'synthetic' else digits_data(root/name, long_tail=name == 'digits_lt')
        labels = pd.read_csv(data/'test_labels.csv').set_index('Id').category_id
        for seed in (map(int, args.seed_list.split(',')) if args.seed_list else range(args.seeds)):
            for key in args.recipes.split(','):
                title, recipe = RECIPES[key]
                start = time.perf_counter()
                ids, predicted = recipe(data, seed, args.epochs, args.size, args.bs, root/f'{name}-{key}-{seed}')
                seconds = time.perf_counter() - start
                f1 = f1_score(labels.loc[ids].to_numpy(), predicted, average='macro')
                rows.append(dict(data=name, recipe=title, seed=seed, macro_f1=float(f1), seconds=seconds))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    table = pd.DataFrame(rows)
    print(f'\nTest macro F1, {args.seeds} seeds, {args.epochs} epochs at {args.size} px, batch {args.bs}, CPU')
    base = 'plain fastai' if 'plain fastai' in set(table.recipe) else table.recipe.iloc[0]  # what the others are compared with
    print(f"{'data':<10} {'recipe':<14} {'macro F1 mean ± sd':>20} {'s a run':>9} {'vs ' + base:>16}   per seed")
    for (name, title), group in table.groupby(['data', 'recipe'], sort=False):
        reference = table[(table.data == name) & (table.recipe == base)].macro_f1.mean()
        sd = statistics.stdev(group.macro_f1) if len(group) > 1 else 0.
        print(f'{name:<10} {title:<14} {group.macro_f1.mean():>12.3f} ± {sd:.3f} {group.seconds.mean():>9.0f} '
              f'{group.macro_f1.mean() - reference:>+16.3f}   {" ".join(f"{v:.3f}" for v in group.macro_f1)}')
    if args.out: Path(args.out).write_text(table.to_json(orient='records', indent=1))

if __name__ == '__main__': main()
