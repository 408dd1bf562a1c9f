#!/usr/bin/env python3
"""Print the installed versions of the packages the kit and its tests depend on, one line: a red test run shows what changed.

Run by the README's test command (and so by .ci/run) before the tests. Reads package metadata only: imports nothing."""
from importlib.metadata import PackageNotFoundError, version

PACKAGES = ('herbarium_fastai', 'fastai', 'fastcore', 'nbdev', 'execnb', 'timm', 'torch', 'torchvision', 'pandas', 'pyarrow',
            'msgspec', 'pillow', 'numpy', 'accelerate', 'safetensors', 'plum-dispatch', 'scikit-learn', 'matplotlib',
            'fastapi', 'starlette', 'uvicorn', 'python-multipart', 'onnx', 'onnxruntime', 'pytest')

def installed(name):
    try: return version(name)
    except PackageNotFoundError: return 'not installed'

if __name__ == '__main__':
    import platform
    print(f"versions: python {platform.python_version()}, " + ', '.join(f'{p} {installed(p)}' for p in PACKAGES))
