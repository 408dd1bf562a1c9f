"A model exported after training predicts the same classes when loaded in a fresh Python process, from either format"
import subprocess, sys, textwrap

import pandas as pd

TRAIN_AND_PREDICT = textwrap.dedent('''
    import sys
    from pathlib import Path
    from herbarium_fastai.metadata import load_metadata
    from herbarium_fastai.data import herbarium_dataloaders
    from herbarium_fastai.learner import herbarium_learner, train_learner, export_learner
    from herbarium_fastai.inference import predict_metadata, save_safe_model
    data, out = sys.argv[1], Path(sys.argv[2])
    dls = herbarium_dataloaders(load_metadata(data + '/train'), size=32, bs=16, num_workers=0)
    learn = herbarium_learner(dls, 'resnet18', pretrained=False, path=out)
    train_learner(learn, epochs=2, lr=3e-3, out=out)
    save_safe_model(learn, out/'safe')
    (out/'pickle').mkdir()
    export_learner(learn, out/'pickle'/'model.pkl')
    top = predict_metadata(learn, load_metadata(data + '/test'), k=3, bs=16, num_workers=0)
    top[['image_id', 'category_id', 'probability']].to_csv(out/'in_training_process.csv', index=False)
''')

LOAD_AND_PREDICT = textwrap.dedent('''
    import sys
    from pathlib import Path
    from herbarium_fastai.metadata import load_metadata
    from herbarium_fastai.inference import load_model, predict_metadata
    data, out, model, name = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    top = predict_metadata(load_model(model, trust_pickle=model.endswith('.pkl')), load_metadata(data + '/test'), k=3, bs=16, num_workers=0)
    top[['image_id', 'category_id', 'probability']].to_csv(out/name, index=False)
''')

def _python(code, *args):
    result = subprocess.run([sys.executable, '-c', code, *map(str, args)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

def test_fresh_process_predicts_the_same(flat_dataset, tmp_path):
    _python(TRAIN_AND_PREDICT, flat_dataset, tmp_path)
    _python(LOAD_AND_PREDICT, flat_dataset, tmp_path, tmp_path/'safe', 'from_safe.csv')
    _python(LOAD_AND_PREDICT, flat_dataset, tmp_path, tmp_path/'pickle'/'model.pkl', 'from_pickle.csv')
    before = pd.read_csv(tmp_path/'in_training_process.csv')
    for name in ['from_safe.csv', 'from_pickle.csv']:
        after = pd.read_csv(tmp_path/name)
        assert before.image_id.tolist() == after.image_id.tolist()
        assert before.category_id.tolist() == after.category_id.tolist(), name
        assert (before.probability - after.probability).abs().max() < 1e-4, name
