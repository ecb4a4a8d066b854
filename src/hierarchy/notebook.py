"""Set-up shared by the notebooks in ``notebooks/``: run size, the checkout, output folders,
simulated data and fit reuse. ``HIERARCHY_FAST=1`` shrinks data and draws;
``HIERARCHY_NOTEBOOK_OUT`` moves the outputs (the tests point it at a temporary folder).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class Session:
    """Where a notebook works and how big it runs."""

    fast: bool
    root: Path  # the checkout (models/, priors/)
    out: Path  # outputs (git-ignored out/notebooks by default)
    settings: dict[str, int]  # chains, tune, draws, seed

    @property
    def size(self) -> str:
        return "fast" if self.fast else "full"

    @property
    def fits(self) -> Path:
        return self.out / "fits"


def find_root() -> Path:
    """The checkout: the first folder up from the working directory with models/ and priors/."""
    import hierarchy

    for folder in [Path.cwd(), *Path.cwd().parents, Path(hierarchy.__file__).resolve().parents[2]]:
        if all((folder / p).exists() for p in ("models", "priors", "pyproject.toml")):
            return folder
    raise RuntimeError("cannot find the hierarchy checkout (models/, priors/): run from inside it")


def setup() -> Session:
    """Read the run size, find the checkout (and make it the working directory), make folders.

    Also lets JAX run the chains in parallel on CPU (must happen before JAX starts).
    """
    from hierarchy.inference.sampling import use_host_devices

    fast = os.environ.get("HIERARCHY_FAST", "") not in ("", "0")
    settings = dict(chains=2, tune=200, draws=200, seed=0) if fast else dict(chains=4, tune=1000, draws=1000,
                                                                              seed=0)
    use_host_devices(settings["chains"])
    out = os.environ.get("HIERARCHY_NOTEBOOK_OUT")
    out = Path(out).resolve() if out else None
    root = find_root()
    os.chdir(root)  # model and prior files are named relative to the checkout
    session = Session(fast=fast, root=root, out=out or root / "out" / "notebooks", settings=settings)
    session.fits.mkdir(parents=True, exist_ok=True)
    warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets
    pd.set_option("display.width", 160)
    pd.set_option("display.max_columns", 20)
    return session


def show(fig) -> None:
    """Display a matplotlib Figure (Agg canvas, no pyplot state) as a PNG."""
    from IPython.display import Image, display

    from hierarchy.reporting.figures import to_png

    display(Image(to_png(fig)))




def simulated_data(session: Session, *, seed: int = 0):
    """Simulate 2019 data (30 generated LAs when fast, else the national geography), write it,
    load it back validated and print its warnings once.

    Returns
    -------
    tuple
        ``(geo, table, truth, path, loaded, data_hash)``.
    """
    from hierarchy.data import reference, simulate
    from hierarchy.data import table as data

    if session.fast:
        geo = reference.synthetic_geography(30, seed=0, lsoa_per_la=40)
    else:
        geo = reference.get_geography()  # the real England geography when found, else a stand-in
    table, truth = simulate.simulate(geo, year=2019, seed=seed)
    path = session.out / "data" / f"simulated_2019_{session.size}.parquet"
    simulate.write(table, truth, path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = data.load(path)
    for w in caught:
        print(f"data.load: {w.message}")
    warnings.filterwarnings("ignore", message=".*: WARNING column", category=UserWarning)  # shown once
    return geo, table, truth, path, loaded, data.data_hash(loaded)


def fit_or_reuse(session: Session, model: str, priors: str, data: Path, data_hash: str) -> Path:
    """Fit ``model`` under ``priors`` to ``data`` with the session's settings, or reuse a saved
    fit of exactly that (same model, priors, data hash and settings)."""
    from hierarchy.errors import FitFileError
    from hierarchy.language.priors import load_priors
    from hierarchy.language.spec import load_spec
    from hierarchy.results import fitfile
    from hierarchy.workflow import fit_files

    spec, pset = load_spec(model), load_priors(priors)
    path = session.fits / f"{spec.name}__{pset.name}__{session.size}.nc"
    if path.exists():
        try:
            prov = fitfile.provenance(fitfile.load_fit(path, model=spec, priors=pset, data_hash=data_hash))
            if all(prov["sampler"].get(k) == v for k, v in session.settings.items()):
                print(f"reusing {path}")
                return path
        except FitFileError as err:
            print(f"not reusing {path}: {err}")
    print(fit_files(data=data, model=model, priors=priors, out=path, progress=False, **session.settings))
    return path
