"""TinyServe core: a Qt-free paged-KV serving engine, query-aware page selection and a
semantic scene lab. Importing this package is cheap: no kernels are compiled and no
model is loaded until asked for."""

__version__ = "0.1.0"
