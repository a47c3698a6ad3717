"""ONNX export and the onnxruntime backend: checker, parity through the Translator, sidecars, cache, fallbacks, threads.

Every export here goes to a temporary GAN_STUDIO_ONNX_CACHE. The tiny models export once per module (the
`exported` fixture); tests that need a fresh export use the smallest net. Large architectures are `slow`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import sys

import numpy as np
import onnx
import pytest
import torch

import gan_models.runtimes.onnx_export as ox
from export.__main__ import main as export_main
from gan_models import (
    BackendUnavailableError,
    GanModelsError,
    OnnxBackend,
    OnnxExportError,
    TorchBackend,
    Translator,
    default_backend,
    translator_for,
)
from gan_models.cli import main as cli_main
from gan_models.runtimes import BackendOutOfMemory, clear_session_cache
from gan_models.runtimes import tournament as tn
from gan_models.specs import HubFile, ModelSpec
from gan_models.weights import build_generator, load_model, save_model_folder

from .conftest import (
    REPO,
    TINY_FIELDS,
    TINY_KWARGS,
    make_tiny_model,
    rgb_image,
    run_in_threads,
    skip_without_shared_data,
    tiny_spec_fields,
)


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ox.CACHE_ENV, str(root))
        mp.delenv("GAN_STUDIO_BACKEND", raising=False)
        yield root
    clear_session_cache()


@pytest.fixture(scope="module")
def exported(tiny_specs, onnx_cache) -> dict[str, dict[str, ox.Exported]]:
    """fp32 and int8 exports of the three tiny models (resnet, unet, srvgg), made once for the module."""
    return {task: {e.precision: e for e in ox.export_model(spec, onnx_cache, precisions=("fp32", "int8"))}
            for task, spec in tiny_specs.items()}


TASKS = ["upscale", "style", "sketch2photo"]


@pytest.mark.parametrize("task", TASKS)
def test_fp32_export_is_valid_dynamic_and_matches_torch(exported, tiny_specs, task):
    result = exported[task]["fp32"]
    assert result.passed, result.failure
    onnx.checker.check_model(str(result.onnx_path), full_check=True)
    model = onnx.load(str(result.onnx_path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param != "" for d in dims] == [True, False, True, True]  # N, H, W symbolic; C fixed
    side = result.sidecar
    lo, hi = tiny_specs[task].value_range
    assert side["parity"]["max_abs_diff"] <= ox.FP32_TOLERANCE * (hi - lo)
    assert side["dynamic_check"]["passed"] and side["dynamic_check"]["input_shape"][0] == 2


@pytest.mark.parametrize("task", TASKS)
def test_sidecar_records_spec_opset_hashes_weights_and_parity(exported, tiny_specs, task):
    spec = tiny_specs[task]
    for precision, result in exported[task].items():
        side = json.loads(result.sidecar_path.read_text())
        assert side["format"] == ox.FORMAT and side["spec"]["id"] == spec.id and side["precision"] == precision
        assert side["opset"] == ox.OPSET
        if result.passed:
            assert side["onnx_sha256"] == ox.sha256_file(result.onnx_path)
        weights = side["weights"]
        assert weights["path"] == str(spec.bundled) and weights["file_sha256"] == ox.sha256_file(spec.bundled)
        assert weights["state_sha256"] == ox.state_sha256(load_model(spec, allow_fallback=False).module)
        assert side["parity"]["image"].startswith("examples/")
        assert isinstance(side["parity"]["psnr_vs_fp32_db"], (float, str))
    int8 = exported[task]["int8"].sidecar
    assert int8["quantization"]["format"] == "QDQ"
    assert all(name.startswith(("examples/", "edges_from_photo(examples/")) for name in int8["quantization"]["images"])
    assert int8["parity"]["passed"] == (int8["parity"]["psnr_vs_fp32_db"] >= ox.MIN_PSNR_DB)


@pytest.mark.parametrize("task", TASKS)
def test_onnx_backend_through_translator_matches_torch(exported, tiny_specs, task):
    spec = tiny_specs[task]
    torch_tr = Translator(spec, TorchBackend(load_model(spec, allow_fallback=False).module, device="cpu"))
    onnx_tr = Translator(spec, OnnxBackend(exported[task]["fp32"].onnx_path, device="cpu"))
    x = np.random.default_rng(5).random((1, 3, 45, 70), dtype=np.float32)
    lo, hi = spec.value_range
    x = x * (hi - lo) + lo
    diff = np.abs(onnx_tr.run_array(x, tile=None) - torch_tr.run_array(x, tile=None)).max()
    assert diff < 1e-4
    img = rgb_image(37, 23, mode="RGBA")
    a, b = np.asarray(onnx_tr(img), np.int16), np.asarray(torch_tr(img), np.int16)
    assert a.shape == b.shape and np.abs(a - b).max() <= 1


def test_tiled_upscale_through_onnx_sees_one_shape(exported, tiny_specs):
    spec = tiny_specs["upscale"]
    backend = OnnxBackend(exported["upscale"]["fp32"].onnx_path, device="cpu")
    shapes: set[tuple[int, ...]] = set()

    class Recording:
        name, device, precision = backend.name, backend.device, backend.precision

        def __call__(self, x):
            shapes.add(x.shape)
            return backend(x)

    x = np.random.default_rng(2).random((1, 3, 150, 110), dtype=np.float32)
    tiled = Translator(spec, Recording()).run_array(x, tile=64)
    module = load_model(spec, allow_fallback=False).module
    reference = Translator(spec, TorchBackend(module, device="cpu")).run_array(x, tile=64)
    assert tiled.shape == (1, 3, 600, 440)
    assert np.abs(tiled - reference).max() < 1e-4
    assert shapes == {(1, 3, 64, 64)}  # every tile, edge tiles included: one shape for the session


def test_concurrent_requests_match_single_thread(exported, tiny_specs):
    spec = tiny_specs["upscale"]
    translator = Translator(spec, OnnxBackend(exported["upscale"]["int8"].onnx_path, device="cpu", precision="int8"))
    images = [rgb_image(24 + 5 * i, 20 + i, seed=i) for i in range(8)]
    expected = [np.asarray(translator(img, tile=16)) for img in images]
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        for _ in range(3):
            results[i] = np.asarray(translator(images[i], tile=16))

    run_in_threads(work, len(images))
    for i, want in enumerate(expected):
        np.testing.assert_array_equal(results[i], want)


def test_sessions_are_shared_per_file(exported):
    path = exported["upscale"]["fp32"].onnx_path
    a = OnnxBackend(path, device="cpu", threads=1)
    b = OnnxBackend(path, device="cpu", threads=1)
    c = OnnxBackend(path, device="cpu", threads=1, cache=False)
    assert a._session is b._session and c._session is not a._session


def test_auto_picks_by_tournament_and_reuses_the_cache(exported, tiny_specs, onnx_cache):
    spec = tiny_specs["upscale"]
    translator = translator_for(spec, backend="auto", device="cpu", background=False)
    record = json.loads(tn.record_path(onnx_cache, spec, "cpu").read_text())
    chosen = record["chosen"]
    assert (translator.backend.name, translator.backend.precision) == (chosen["runtime"], chosen["precision"])
    verdicts = {(c["runtime"], c["precision"]): c["verdict"] for c in record["candidates"]}
    assert verdicts[(chosen["runtime"], chosen["precision"])] == tn.CHOSEN
    assert verdicts[("onnxruntime", "fp16")] == "not available on this CPU"
    assert default_backend(spec) == chosen["runtime"]
    before = {p: p.stat().st_mtime_ns for p in ox.model_dir(onnx_cache, spec).glob("*.onnx")}
    again = translator_for(spec, backend="onnx", device="cpu")  # onnxruntime's own best: the same exports
    assert again.backend.name == "onnxruntime" and again.backend.precision in ("fp32", "int8")
    assert {p: p.stat().st_mtime_ns for p in ox.model_dir(onnx_cache, spec).glob("*.onnx")} == before


def test_auto_choice_made_with_an_older_recipe_is_made_again(exported, tiny_specs, onnx_cache):
    spec = tiny_specs["style"]
    module = load_model(spec, allow_fallback=False).module
    source = load_model(spec, allow_fallback=False).source
    first = tn.run_tournament(spec, module, source, device="cpu", root=onnx_cache)
    assert tn.run_tournament(spec, module, source, device="cpu", root=onnx_cache).reused
    assert first.record["key"]["recipes"]["onnx int8"] == ox.RECIPES["int8"]
    stale = json.loads(first.record_path.read_text())
    stale["key"]["recipes"]["onnx int8"] -= 1
    stale["chosen"] = {"runtime": "torch", "precision": "fp32"}
    first.record_path.write_text(json.dumps(stale))
    again = tn.run_tournament(spec, module, source, device="cpu", root=onnx_cache)
    assert not again.reused and again.record["key"] == first.record["key"]


def test_changed_weights_file_re_exports(tmp_path, monkeypatch):
    monkeypatch.setenv(ox.CACHE_ENV, str(tmp_path / "cache"))
    spec = make_tiny_model(tmp_path / "model", "upscale", seed=1)
    first = translator_for(spec, backend="onnx", precision="fp32", device="cpu")
    side_path = ox.onnx_path_for(tmp_path / "cache", spec, "fp32").with_suffix(".json")
    old = json.loads(side_path.read_text())
    torch.manual_seed(2)  # new weights in the same file, as after `train.py` writes a newer checkpoint
    save_model_folder(build_generator(spec), spec.bundled.parent, spec_fields=tiny_spec_fields("upscale"))
    second = translator_for(spec, backend="onnx", precision="fp32", device="cpu")
    new = json.loads(side_path.read_text())
    assert new["weights"]["file_sha256"] != old["weights"]["file_sha256"]
    assert new["onnx_sha256"] != old["onnx_sha256"] and new["parity"]["passed"]
    x = rgb_image(30, 20)
    assert not np.array_equal(np.asarray(first(x)), np.asarray(second(x)))
    torch_now = translator_for(spec, backend="torch", device="cpu")
    assert np.abs(np.asarray(second(x), np.int16) - np.asarray(torch_now(x), np.int16)).max() <= 1


def test_default_backend_is_torch_without_onnxruntime(tiny_specs, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    monkeypatch.setitem(sys.modules, "openvino", None)  # ... and so does the other runtime of ONNX graphs
    monkeypatch.delenv("GAN_STUDIO_BACKEND", raising=False)
    spec = tiny_specs["upscale"]
    assert default_backend(spec) == "torch"
    assert translator_for(spec, backend="auto", device="cpu", background=False).backend.name == "torch"
    with pytest.raises(BackendUnavailableError, match="onnxruntime"):
        translator_for(spec, backend="onnx", device="cpu")


def test_env_var_forces_a_backend(tiny_specs, monkeypatch):
    spec = tiny_specs["upscale"]
    monkeypatch.setenv("GAN_STUDIO_BACKEND", "torch")
    assert default_backend(spec) == "torch"
    assert translator_for(spec, device="cpu").backend.name == "torch"
    monkeypatch.setenv("GAN_STUDIO_BACKEND", "tensorflow")
    with pytest.raises(GanModelsError, match="GAN_STUDIO_BACKEND"):
        default_backend(spec)


def test_export_failure_is_a_verdict_for_auto_and_an_error_for_onnx(tmp_path, monkeypatch):
    monkeypatch.setenv(ox.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv("GAN_STUDIO_BACKEND", raising=False)
    spec = make_tiny_model(tmp_path / "model", "upscale", seed=3)
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("simulated exporter crash")

    monkeypatch.setattr(ox, "_export_fp32", broken)
    translator = translator_for(spec, backend="auto", device="cpu", background=False)
    assert translator.backend.name == "torch"
    record = json.loads(tn.record_path(tmp_path / "cache", spec, "cpu").read_text())
    onnx = {c["precision"]: c for c in record["candidates"] if c["runtime"] == "onnxruntime"}
    assert onnx["fp32"]["verdict"] == tn.EXPORT_FAILED and "simulated exporter crash" in onnx["fp32"]["reason"]
    assert onnx["int8"]["verdict"] == tn.EXPORT_FAILED and "fp32 export unusable" in onnx["int8"]["reason"]
    assert record["chosen"] == {"runtime": "torch", "precision": "fp32"} and calls == [1]
    assert default_backend(spec) == "torch"
    translator_for(spec, backend="auto", device="cpu", background=False)
    assert calls == [1]  # remembered: the next load reuses the record and exports nothing
    with pytest.raises(OnnxExportError, match="simulated exporter crash"):
        translator_for(spec, backend="onnx", device="cpu")


def test_parity_failure_is_reported_not_used(exported, tiny_specs, tmp_path, monkeypatch):
    # The "exporter" hands back the graph of another model of the same architecture: a real mismatch.
    other = exported["upscale"]["fp32"].onnx_path
    monkeypatch.setattr(ox, "_export_fp32", lambda module, spec, path, opset: shutil.copyfile(other, path))
    torch.manual_seed(7)
    module = build_generator(tiny_specs["upscale"]).eval()
    result = ox.export_model(tiny_specs["upscale"], tmp_path, precisions=("fp32", "int8"), module=module)
    assert [r.passed for r in result] == [False, False]
    assert "tolerance" in result[0].failure and "fp32 export unusable" in result[1].failure
    assert result[0].sidecar["parity"]["max_abs_diff"] > ox.FP32_TOLERANCE


def test_bad_precision_is_a_clear_error(tiny_specs, tmp_path, capsys):
    spec = tiny_specs["upscale"]
    with pytest.raises(GanModelsError, match="unknown precision 'int4'.*fp32, fp16, int8"):
        ox.export_model(spec, tmp_path, precisions=("int4",))
    with pytest.raises(BackendUnavailableError, match="bf16.*no bfloat16 Conv kernel"):
        ox.export_model(spec, tmp_path, precisions=("bf16",))
    with pytest.raises(GanModelsError, match="precision"):
        translator_for(spec, backend="onnx", precision="int4", device="cpu")
    with pytest.raises(GanModelsError, match="precision 'int8' is for the onnx backend"):
        translator_for(spec, backend="torch", precision="int8", device="cpu")
    assert export_main([str(spec.bundled.parent), "-o", str(tmp_path), "--precision", "int4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown precision") and "\n" not in err
    assert not list(tmp_path.rglob("*.onnx"))


def test_export_cli_writes_files_and_reports(exported, tiny_specs, onnx_cache, capsys):
    folder = tiny_specs["style"].bundled.parent
    assert export_main([str(folder), "-o", str(onnx_cache), "--precision", "fp32", "--reuse"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok   tiny-style") and "max|diff|" in out and str(exported["style"]["fp32"].onnx_path) in out


def test_export_cli_all_skips_unavailable_weights(tiny_specs, tmp_path, monkeypatch, offline_hub, capsys):
    import export.__main__ as export_cli

    hub_only = dataclasses.replace(tiny_specs["upscale"], id="hub-only", bundled=None,
                                   sources=(HubFile(repo_id="nobody/none", filename="x.bin", revision="main"),))
    monkeypatch.setattr(export_cli, "SPECS", {"hub-only": hub_only})
    assert export_main(["--all", "-o", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "skip hub-only" in err and "offline" in err


def test_cli_runs_with_the_onnx_backend(exported, tiny_specs, tmp_path, capsys):
    rgb_image(20, 16).save(tmp_path / "a.png")
    folder = str(tiny_specs["upscale"].bundled.parent)
    code = cli_main(["run", folder, str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--backend", "onnx",
                     "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "a_tiny-upscale.png").is_file()
    assert cli_main(["run", folder, str(tmp_path / "a.png"), "-o", str(tmp_path / "o2"), "--backend", "tf"]) == 2
    assert "unknown backend 'tf'" in capsys.readouterr().err


def test_out_of_memory_becomes_backend_out_of_memory(exported):
    backend = OnnxBackend(exported["upscale"]["fp32"].onnx_path, device="cpu", cache=False)

    class Exhausted:
        def run(self, *args, **kwargs):
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory for buffer")

    backend._session = Exhausted()
    with pytest.raises(BackendOutOfMemory):
        backend(np.zeros((1, 3, 8, 8), np.float32))


def test_default_cache_is_outside_the_repository(monkeypatch):
    monkeypatch.delenv(ox.CACHE_ENV, raising=False)
    cache = ox.cache_dir().resolve()
    assert REPO.resolve() not in (cache, *cache.parents)


def _arch_spec(arch: str, task: str) -> ModelSpec:
    fields = dict(TINY_FIELDS[task], arch=arch, arch_kwargs=TINY_KWARGS[arch])
    if arch == "huggan_unet":
        fields.update(size_multiple=256, input_size=256)
    fields["value_range"] = tuple(fields["value_range"])
    return ModelSpec(id=f"tiny-{arch}", title=arch, task=task, **fields)


@pytest.mark.parametrize(("arch", "task"), [
    ("srresnet", "upscale"),
    pytest.param("rrdbnet", "upscale", marks=pytest.mark.slow),
    pytest.param("huggan_unet", "sketch2photo", marks=pytest.mark.slow),
    pytest.param("unet_generator", "sketch2photo", marks=pytest.mark.slow),  # batch-norm variant
])
def test_other_architectures_export_with_parity(arch, task, tmp_path):
    spec = _arch_spec(arch, task)
    if arch == "unet_generator":
        spec = dataclasses.replace(spec, arch_kwargs={**TINY_KWARGS[arch], "norm": "batch"})
    torch.manual_seed(0)
    module = build_generator(spec).eval()
    if arch == "unet_generator":  # give BatchNorm non-trivial running statistics: eval mode must use them
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    (result,) = ox.export_model(spec, tmp_path, module=module)
    assert result.passed, result.failure
    assert result.sidecar["dynamic_check"]["passed"]


def test_repository_ignores_onnx_files():
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert "*.onnx" in ignored and "*.onnx.data" in ignored


def _prelu_net(slopes: list[float]) -> torch.nn.Module:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, len(slopes), 3, padding=1), torch.nn.PReLU(len(slopes)))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor(slopes))
    return net.eval()


@pytest.mark.parametrize("slopes", [[0.25, -0.5, 1.0, 0.0], [0.25, 1.5, 0.1, 0.2]])
def test_prelu_as_max_is_exact_and_only_where_it_holds(tmp_path, slopes):
    import onnxruntime as ort

    net = _prelu_net(slopes)
    x = torch.randn(1, 3, 9, 11)
    path = tmp_path / "prelu.onnx"
    with torch.no_grad():
        torch.onnx.export(net, (x,), str(path), dynamo=True, input_names=["input"], output_names=["output"])
        ref = net(x).numpy()
    model = onnx.load(str(path))
    rewritten = ox.prelu_as_max(model)
    ops = [n.op_type for n in model.graph.node]
    if max(slopes) <= 1:
        assert rewritten == 1 and "PRelu" not in ops and {"Mul", "Max"} <= set(ops)
    else:  # a slope above 1 would make max() wrong: that PRelu stays
        assert rewritten == 0 and "PRelu" in ops
    onnx.checker.check_model(model, full_check=True)
    out = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("task", TASKS)
def test_int8_keeps_the_convs_on_the_image_float(exported, task):
    int8 = exported[task]["int8"]
    graph = onnx.load(str(int8.onnx_path)).graph
    weights = {t.name: t for t in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    float_convs = [n.name for n in convs if n.input[1] in weights]  # quantized ones read DequantizeLinear outputs
    expected = [convs[0].name]
    if task == "style":  # ResNet generator: the last conv writes RGB (3 channels)
        assert weights[convs[-1].input[1]].dims[0] == 3
        expected.append(convs[-1].name)
    # upscale: the last conv writes 3 x scale² channels for the pixel shuffle: full-size work, quantized;
    # sketch2photo: the U-Net ends in a ConvTranspose
    assert float_convs == int8.sidecar["quantization"]["float_convs"] == expected
    assert len(convs) > len(expected)


def test_int8_of_the_upscaler_has_no_prelu_and_an_older_recipe_is_re_exported(exported, tiny_specs, onnx_cache):
    int8 = exported["upscale"]["int8"]
    assert int8.sidecar["recipe"] == ox.RECIPES["int8"]
    assert int8.sidecar["quantization"]["prelu_as_max"] > 0
    assert "PRelu" not in {n.op_type for n in onnx.load(str(int8.onnx_path)).graph.node}
    spec = tiny_specs["upscale"]
    sha = int8.sidecar["weights"]["state_sha256"]
    assert ox.load_existing(onnx_cache, spec, "int8", sha) is not None
    stale = dict(int8.sidecar, recipe=ox.RECIPES["int8"] - 1)
    int8.sidecar_path.write_text(json.dumps(stale))
    try:
        assert ox.load_existing(onnx_cache, spec, "int8", sha) is None  # made the old way: export again
    finally:
        int8.sidecar_path.write_text(json.dumps(int8.sidecar))


@pytest.mark.slow  # int8 calibration of the real networks: 29 s for the three
@pytest.mark.parametrize("model_id", ["default-style", "default-sketch", "default-upscale-x4"])
def test_int8_of_the_bundled_defaults_keeps_40_db_on_photos_it_was_not_calibrated_on(model_id, tmp_path):
    """The parity check sees one image; the int8 file the app runs must hold on real photos and paintings too."""
    from PIL import Image

    from gan_models import imaging
    from gan_models.specs import get_spec

    data = skip_without_shared_data()
    spec = get_spec(model_id)
    try:
        module = load_model(spec, allow_fallback=False).module
    except GanModelsError as exc:
        pytest.skip(f"bundled weights unavailable: {exc}")
    files = sorted((data / "sr" / "val").glob("*.png"))[:4] + sorted((data / "paintings").glob("*.jpg"))[:2]
    if not files:
        pytest.skip("no photos in shared data")
    exported = {e.precision: e for e in ox.export_model(spec, tmp_path, precisions=("fp32", "int8"), module=module)}
    assert exported["int8"].passed, exported["int8"].failure
    torch_path = Translator(spec, TorchBackend(module, device="cpu"))
    int8_path = Translator(spec, OnnxBackend(exported["int8"].onnx_path, device="cpu", cache=False))
    side = 96 if spec.task == "upscale" else 256
    psnrs = []
    for f in files:
        img = Image.open(f).convert("RGB").resize((side, side))
        if spec.task == "sketch2photo":
            img = imaging.edges_from_photo(img).convert("RGB")
        x = imaging.to_tensor_range(np.asarray(img, np.float32) / 255.0, spec.value_range)
        psnrs.append(ox.psnr_db(int8_path.run_array(x), torch_path.run_array(x), spec.value_range))
    assert min(psnrs) >= ox.MIN_PSNR_DB, dict(zip([f.name for f in files], psnrs, strict=True))


def test_large_upscalers_calibrate_on_the_same_pixels_in_quarters(tiny_specs):
    spec = tiny_specs["upscale"]
    whole, names = ox.calibration_inputs(spec)
    quarters, split_names = ox.calibration_inputs(spec, split=True)
    assert split_names == names and len(quarters) == 4 * len(whole)
    assert whole[0].shape == (1, 3, 64, 64) and quarters[0].shape == (1, 3, 32, 32)
    np.testing.assert_array_equal(quarters[0], whole[0][:, :, :32, :32])
    np.testing.assert_array_equal(quarters[3], whole[0][:, :, 32:, 32:])


def test_calibration_session_runs_without_a_memory_pattern(tmp_path):
    import onnxruntime as ort
    from onnxruntime.quantization import calibrate

    original = calibrate.CalibraterBase.create_inference_session
    path = tmp_path / "prelu.onnx"
    with torch.no_grad():
        torch.onnx.export(_prelu_net([0.25, 0.5]), (torch.randn(1, 3, 8, 8),), str(path), dynamo=True,
                          input_names=["input"], output_names=["output"])
    fields = {"augmented_model_path": str(path), "execution_providers": ["CPUExecutionProvider"]}
    stub = type("Calibrater", (), fields)()
    with ox._calibration_without_memory_pattern():
        calibrate.CalibraterBase.create_inference_session(stub)
    assert calibrate.CalibraterBase.create_inference_session is original
    assert isinstance(stub.infer_session, ort.InferenceSession)
    assert stub.infer_session.get_session_options().enable_mem_pattern is False


# --- the sub-pixel graph (OpenVINO bf16) -------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
def test_a_transposed_conv_and_its_sub_pixel_conv_compute_the_same(bias):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.ConvTranspose2d(6, 5, 4, 2, 1, bias=bias), torch.nn.ReLU(),
                              torch.nn.ConvTranspose2d(5, 3, 3, 2, 1, output_padding=1))  # not k4/s2/p1: kept
    twin = copy.deepcopy(net)
    assert ox.subpixel_deconvs(twin) == 1
    x = torch.randn(2, 6, 9, 14)
    assert isinstance(twin[2], torch.nn.ConvTranspose2d) and not isinstance(twin[0], torch.nn.ConvTranspose2d)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), net(x), rtol=0, atol=1e-5)


@pytest.mark.slow  # 7-8 s: two exports and OpenVINO compiles
def test_the_sub_pixel_graph_has_no_transposed_convs_and_matches_torch(tiny_specs, tmp_path):
    spec = tiny_specs["sketch2photo"]  # a U-Net: its upsampling is ConvTranspose(k=4, s=2, p=1)
    module = load_model(spec, allow_fallback=False).module
    assert ox.has_subpixel_deconvs(module) and not ox.has_subpixel_deconvs(
        load_model(tiny_specs["upscale"], allow_fallback=False).module)
    fp32, sub = ox.export_model(spec, tmp_path, precisions=("fp32", ox.SUBPIXEL), module=module)
    assert sub.passed and sub.onnx_path.name.endswith(".fp32-subpixel.onnx") and sub.sidecar["dynamic_check"]["passed"]
    assert sub.sidecar["parity"]["max_abs_diff"] <= ox.FP32_TOLERANCE * 2  # against the original torch module
    ops = {path: {n.op_type for n in onnx.load(str(path)).graph.node} for path in (fp32.onnx_path, sub.onnx_path)}
    assert "ConvTranspose" in ops[fp32.onnx_path] and "ConvTranspose" not in ops[sub.onnx_path]
    assert "DepthToSpace" in ops[sub.onnx_path]
    again = ox.export_model(spec, tmp_path, precisions=(ox.SUBPIXEL,), module=module)[0]
    assert again.sidecar["created"] == sub.sidecar["created"]  # reused, not exported twice


@pytest.mark.slow  # 7-8 s: two exports and OpenVINO compiles
def test_openvino_bf16_competes_on_both_graphs_where_the_net_has_transposed_convs(tiny_specs, tmp_path, monkeypatch):
    from gan_models.runtimes import registry

    built: list[tuple[str, str]] = []
    monkeypatch.setattr(registry, "OpenVinoBackend",
                        lambda path, **kw: built.append((kw["precision"], path.name)) or object())
    openvino = registry.RUNTIMES["openvino"]
    spec = tiny_specs["sketch2photo"]
    artifacts = registry.Artifacts(spec=spec, module=load_model(spec, allow_fallback=False).module, source=None,
                                   root=tmp_path)
    for precision in ("bf16", registry.BF16_SUBPIXEL):
        assert openvino.not_applicable(artifacts.module, precision) is None
        openvino.make(artifacts, precision=precision, device="cpu", threads=1)
    assert built == [("bf16", f"{spec.id}.fp32.onnx"), ("bf16", f"{spec.id}.{ox.SUBPIXEL}.onnx")]
    upscaler = load_model(tiny_specs["upscale"], allow_fallback=False).module  # no transposed convs
    assert "no ConvTranspose" in openvino.not_applicable(upscaler, registry.BF16_SUBPIXEL)
    monkeypatch.setattr(registry, "SUBPIXEL_MAX_WEIGHTS", ox.subpixel_weight_count(artifacts.module) - 1)
    assert "more memory" in openvino.not_applicable(artifacts.module, registry.BF16_SUBPIXEL)  # bounded export


def test_the_sub_pixel_weight_count_is_what_the_rewritten_network_holds(tiny_specs):
    module = load_model(tiny_specs["sketch2photo"], allow_fallback=False).module
    rewritten = copy.deepcopy(module)
    ox.subpixel_deconvs(rewritten)
    assert ox.subpixel_weight_count(module) == sum(p.numel() for p in rewritten.parameters())
