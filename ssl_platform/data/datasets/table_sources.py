"""Where a `Table` comes from: the bundled tables, the layouts of benchmark files you download, your file.

- `BUNDLED`: scikit-learn's `breast_cancer`, `wine` and `digits`, statsmodels' `randhie` and `fair`;
  each loader returns the frame and its `Layout` (target and column types), no download;
- `LAYOUTS`: `adult`, `higgs`, `california`, files you download yourself (each `Layout` says where
  from and where under the data root it is looked for; nothing is downloaded here);
- anything else is a `.csv` / `.parquet` path, whose columns `Table` gets from its arguments.

pandas, scikit-learn and statsmodels are imported by the loaders that need them: they are slow to
import, and most runs read no table.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from ssl_platform.data.root import find_data_path, resolve_root

PARQUET = (".parquet", ".pq")


@dataclasses.dataclass(frozen=True)
class Layout:
    """What a table holds: feature column types, the target, the task, and where its file comes from.

    Attributes:
        columns: feature column -> "num" | "cat".
        target: the label column.
        task: "classification" | "regression".
        classes: raw target value -> class name, in label order (None: the sorted distinct values).
        file: where the file is looked for under the data root, unless `path=` is given.
        get: how to obtain the file (the error message of a missing file).
        read: keyword arguments of `pandas.read_csv` for this file (headerless files name their columns).
    """

    columns: dict[str, str]
    target: str
    task: str
    classes: dict[Any, str] | None = None
    file: str = ""
    get: str = ""
    read: dict[str, Any] = dataclasses.field(default_factory=dict)


_ADULT_NUM = ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week")
_ADULT_CAT = ("workclass", "education", "marital-status", "occupation", "relationship", "race", "sex",
              "native-country")
_ADULT_NAMES = ("age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
                "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week",
                "native-country", "income")
# the 21 low-level (detector) then 7 high-level (derived mass) features of the HIGGS benchmark
_HIGGS_NAMES = ("lepton_pt", "lepton_eta", "lepton_phi", "missing_energy_magnitude", "missing_energy_phi",
                *(f"jet{j}_{v}" for j in range(1, 5) for v in ("pt", "eta", "phi", "btag")),
                "m_jj", "m_jjj", "m_lv", "m_jlv", "m_bb", "m_wbb", "m_wwbb")
_CALIFORNIA = ("MedInc", "HouseAge", "AveRooms", "AveBedrms", "Population", "AveOccup", "Latitude", "Longitude")

# the T-JEPA / Gorishniy et al. benchmark tables, for users who download them (see Layout.get)
LAYOUTS: dict[str, Layout] = {
    "adult": Layout(
        columns={**{c: "num" for c in _ADULT_NUM}, **{c: "cat" for c in _ADULT_CAT}},
        target="income", task="classification", classes={"<=50K": "<=50K", ">50K": ">50K"},
        file="adult/adult.data",
        get="adult.data from the UCI archive, https://archive.ics.uci.edu/dataset/2/adult (inside adult.zip); "
            "headerless CSV, 32561 rows, missing values written '?'",
        read={"header": None, "names": list(_ADULT_NAMES), "skipinitialspace": True, "na_values": ["?"]},
    ),
    "higgs": Layout(
        columns={c: "num" for c in _HIGGS_NAMES}, target="label", task="classification",
        classes={0.0: "background", 1.0: "signal"}, file="higgs/HIGGS.csv.gz",
        get="HIGGS.csv.gz from the UCI archive, https://archive.ics.uci.edu/dataset/280/higgs (11M rows, "
            "2.6 GB; for a quick run keep the first rows: zcat HIGGS.csv.gz | head -n 1000000 > higgs_1m.csv "
            "and pass path=higgs_1m.csv)",
        read={"header": None, "names": ["label", *_HIGGS_NAMES]},
    ),
    "california": Layout(
        columns={c: "num" for c in _CALIFORNIA}, target="MedHouseVal", task="regression",
        file="california/california_housing.csv",
        get="scikit-learn's copy (target in units of $100k), written once with internet: python -c \"from "
            "sklearn.datasets import fetch_california_housing as f; "
            "f(as_frame=True).frame.to_csv('california_housing.csv', index=False)\"",
    ),
}


def _sklearn(name: str) -> tuple[Any, Layout]:
    """scikit-learn's bundled `load_<name>()`: every feature numeric, the target as class names."""
    import pandas as pd
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")()
    frame = pd.DataFrame(bunch.data, columns=[str(c) for c in bunch.feature_names])
    names = [str(n) for n in bunch.target_names]
    frame["target"] = [names[i] for i in bunch.target]
    columns = {str(c): "num" for c in bunch.feature_names}
    layout = Layout(columns, "target", "classification", classes={n: n for n in names})
    return frame, layout


def _randhie() -> tuple[Any, Layout]:
    """RAND Health Insurance Experiment: outpatient visits (`mdvis`, a count 0..77) from plan and health.

    The 0/1 indicators (individual deductible plan; good, fair, poor self-rated health) are categorical.
    """
    import statsmodels.api as sm

    frame = sm.datasets.randhie.load_pandas().data
    num = ("lncoins", "lpi", "fmde", "physlm", "disea")
    layout = Layout({**{c: "num" for c in num}, **{c: "cat" for c in ("idp", "hlthg", "hlthf", "hlthp")}},
                    "mdvis", "regression")
    return frame, layout


def _fair() -> tuple[Any, Layout]:
    """Fair's 1978 affairs survey: did the respondent have an affair (`affairs > 0`)? 2053 yes of 6366.

    `affairs` itself (time spent in affairs) is the outcome, never a feature. Occupation codes (1-6,
    hers and the husband's), religiousness (1-4) and marriage rating (1-5) are categorical; age, years
    married, children and education (years) are numeric.
    """
    import statsmodels.api as sm

    frame = sm.datasets.fair.load_pandas().data
    frame["had_affair"] = np.where(frame.pop("affairs") > 0, "yes", "no")
    cat = ("rate_marriage", "religious", "occupation", "occupation_husb")
    num = ("age", "yrs_married", "children", "educ")
    layout = Layout({**{c: "num" for c in num}, **{c: "cat" for c in cat}}, "had_affair", "classification",
                    classes={"no": "no", "yes": "yes"})
    return frame, layout


BUNDLED = {
    "breast_cancer": lambda: _sklearn("breast_cancer"),  # 569 rows, 30 num, malignant / benign
    "wine": lambda: _sklearn("wine"),  # 178 rows, 13 num, 3 cultivars
    "digits": lambda: _sklearn("digits"),  # 1797 rows, 64 num (8x8 pixel counts 0..16), 10 digits
    "randhie": _randhie,  # 20190 rows, 5 num + 4 cat, regression on mdvis
    "fair": _fair,  # 6366 rows, 4 num + 4 cat, had_affair yes / no
}


def read_table(path: str | Path, **read_kwargs: Any) -> Any:
    """A `.csv` (also `.csv.gz`, `.tsv`, `.data`...) or `.parquet` file as a pandas DataFrame."""
    import pandas as pd

    path = Path(path).expanduser()
    if path.suffix.lower() in PARQUET:
        try:
            return pd.read_parquet(path)
        except ImportError as err:
            raise ImportError(f"reading {path} needs a parquet engine: pip install pyarrow ({err})") from err
    if path.suffix.lower() == ".tsv":
        read_kwargs = {"sep": "\t", **read_kwargs}
    return pd.read_csv(path, **read_kwargs)


def load_table_source(source: str, path: str | Path | None,
                      root: str | Path | None) -> tuple[Any, Layout | None, str]:
    """`Table`'s `source`: (the pandas frame, its layout or None for a file of your own, a short name for
    messages). `path` is a layout's downloaded file; `root` the data root a layout's file is looked for in."""
    if path is not None and source not in LAYOUTS:
        raise ValueError(f"Table({source!r}): path= is the downloaded file of a layout ({sorted(LAYOUTS)}); "
                         "a file of your own is the source itself: Table('my.csv', columns=..., target=...)")
    if source in BUNDLED:
        frame, layout = BUNDLED[source]()
        return frame, layout, source
    if source in LAYOUTS:
        layout = LAYOUTS[source]
        file = (find_data_path(path) or Path(path).expanduser()) if path is not None else resolve_root(root) / layout.file
        if not file.is_file():
            raise FileNotFoundError(
                f"Table({source!r}): {file} does not exist and nothing is downloaded here. Get {layout.get}; "
                f"put it at {resolve_root(root) / layout.file} (the data root is $SSL_PLATFORM_DATA, "
                f"default ./data) or pass path=... to the file"
            )
        return read_table(file, **layout.read), layout, source
    file = Path(source).expanduser()
    if not file.is_file():
        raise FileNotFoundError(
            f"Table({source!r}): no such file, and not a known table. Pass a .csv or .parquet file, one of the "
            f"bundled tables {sorted(BUNDLED)}, or one of the layouts {sorted(LAYOUTS)} (with path=...)"
        )
    return read_table(file), None, file.name
