"""Top-1 agreement of one model predicting a test set two ways: its images opened at reduced scale (`decode='reduced'`,
the default since 0.4) and opened whole (`decode='full'`, 0.3's pipeline), with each way's test score.

    HERBARIUM_CACHE=/tmp/cache herbarium-train --demo --out RUN
    python bench/agreement.py RUN /tmp/cache/demo                   # the demo's test set (96-px sheets)
    python bench/agreement.py RUN /tmp/cache/demo --redraw 1000     # the same test sheets drawn at 1000 px

The model's weights are loaded once and put in two learners that differ only in their model description's `decode`
(`inference.learner_from_description`). Both squish an image to the presize (192 px for a 128-px model), then the
batch transforms resize it to 128 px. The demo's sheets are 64 x 96 px, smaller than the presize, so no JPEG of them is
decoded at reduced scale: the two ways differ there only in the squish (fastai's `Resize` on a PIL image against
`images.squish`, torch's antialiased bilinear). `--redraw N` draws the same test sheets (same seed, ids and species) at
N px on the long side, where reduced decoding is used.
"""
import argparse, dataclasses, json, sys, tempfile, warnings
from pathlib import Path

warnings.filterwarnings('ignore')
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from herbarium_fastai.images import reduced_scale
from herbarium_fastai.inference import (learner_from_description, load_model, model_description, predict_metadata,
                                        score_submission, submission_frame)
from herbarium_fastai.metadata import image_paths, load_metadata
from herbarium_fastai.runs import DEMO
from herbarium_fastai.synth import make_synthetic_dataset

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('run'); p.add_argument('data'); p.add_argument('--redraw', type=int, default=None)
    args = p.parse_args()
    data = Path(args.data)
    if args.redraw:
        settings = json.loads((data/'demo_settings.json').read_text()) if (data/'demo_settings.json').exists() else DEMO
        data = Path(tempfile.mkdtemp(prefix='herbarium-agreement-'))/'data'
        make_synthetic_dataset(data, **{**settings, 'size': args.redraw})
    learn = load_model(args.run, cpu=True)
    d = model_description(learn)
    test = load_metadata(data, split='test')
    labels = pd.read_csv(data/'test_labels.csv')
    with Image.open(image_paths(test.iloc[:1])[0]) as first: width, height = first.size
    print(f"model: {d.arch} at {d.size} px (presize {d.presize}), trained with decode={d.decode!r}; "
          f"{len(test)} test sheets of {width} x {height} px: decoded at 1/{reduced_scale(width, height, d.presize)} scale for the {d.presize}-px presize")
    answers = {}
    for decode in ('full', 'reduced'):
        other = learn if decode == d.decode else learner_from_description(dataclasses.replace(d, decode=decode))
        if other is not learn: other.model.load_state_dict(learn.model.state_dict())
        answers[decode] = predict_metadata(other, test, k=1, num_workers=0, ranks=False)
        score = score_submission(submission_frame(answers[decode]), labels)
        print(f"decode={decode!r:10} macro F1 {score['macro_f1']:.4f}  accuracy {score['accuracy']:.4f}")
    same = (answers['full'].category_id.to_numpy() == answers['reduced'].category_id.to_numpy())
    print(f"top-1 agreement: {same.mean():.4f} ({same.sum()} of {len(same)} test sheets)")

if __name__ == '__main__': main()
