# The test folders form one package, `tests`, so pytest puts the repository root on sys.path
# instead of tests/ itself: otherwise tests/kernels would be importable as a top-level
# `kernels` and shadow Hugging Face's `kernels` distribution, which transformers >= 5.25
# imports (ImportError: cannot import name 'CUDAProperties' from 'kernels').
