"""scripts/fetch_teachers.py and distillbench.teachers: a generated cifar_teachers.tar served from 127.0.0.1.

The archive holds real (randomly initialised) resnet56 and resnet8x4 checkpoints in the released layout,
cifar_teachers/<arch>_vanilla/ckpt_epoch_240.pth, with RepDistiller's keys.
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import subprocess
import sys
import tarfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from distillbench.data import build_cifar100
from distillbench.models import create_model
from distillbench.teachers import ARCHIVE_NAME, ARCHIVE_URL, DownloadFailed, TeachersError, fetch_teachers
from distillbench.teachers import fetch as fetch_module
from distillbench.weights import load_model_weights
from tests.helpers import REPO_ROOT, compose_config

REPO = REPO_ROOT
sys.path.insert(0, str(REPO / "scripts"))
import fetch_teachers as script  # noqa: E402

ARCHS = ("resnet56", "resnet8x4")
REL = {arch: f"{arch}_vanilla/ckpt_epoch_240.pth" for arch in ARCHS}


def checkpoint_bytes(arch: str, seed: int) -> bytes:
    """A checkpoint as RepDistiller's train_teacher.py saves ckpt_epoch_240.pth."""
    torch.manual_seed(seed)
    model = create_model(arch)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    buffer = io.BytesIO()
    torch.save({"epoch": 240, "model": model.state_dict(), "accuracy": torch.tensor([71.5]),
                "optimizer": optimizer.state_dict()}, buffer)
    return buffer.getvalue()


def write_tar(path: Path, files: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    """A tar of ``files`` (member name -> bytes) with their folders, plus symbolic links (name -> target)."""
    with tarfile.open(path, "w") as tar:
        folders = sorted({str(Path(name).parent) for name in files if "/" in name})
        for folder in folders:
            info = tarfile.TarInfo(folder)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


@pytest.fixture(scope="module")
def released() -> dict[str, bytes]:
    """The generated release: path under cifar_teachers/ -> bytes."""
    return {REL[arch]: checkpoint_bytes(arch, seed) for seed, arch in enumerate(ARCHS)}


class Server:
    """A folder served over HTTP on 127.0.0.1, counting the requests."""

    def __init__(self, root: Path):
        self.root, self.requests = root, 0
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                server.requests += 1
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/{ARCHIVE_NAME}"

    def publish(self, files: dict[str, bytes], **links) -> None:
        write_tar(self.root / ARCHIVE_NAME, {f"cifar_teachers/{rel}": data for rel, data in files.items()}, **links)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    served = Server(root)
    thread = threading.Thread(target=served.httpd.serve_forever, daemon=True)
    thread.start()
    yield served
    served.httpd.shutdown()
    served.httpd.server_close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{ARCHIVE_NAME}"


def leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_download_unpacks_verified_teachers_where_the_experiment_configs_look(server, released, tmp_path):
    server.publish(released)
    dest = tmp_path / "teachers"
    result = fetch_teachers(dest, url=server.url, progress=False)

    assert [(t.arch, t.path, t.status) for t in result.teachers] == [
        (arch, dest / REL[arch], "unpacked, sha256 recorded") for arch in ("resnet56", "resnet8x4")]
    for rel, data in released.items():
        assert (dest / rel).read_bytes() == data
    manifest = json.loads((dest / "MANIFEST.json").read_text())
    assert manifest["files"] == {rel: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                                       "origin": "archive"} for rel, data in released.items()}
    archive_bytes = (server.root / ARCHIVE_NAME).read_bytes()
    assert manifest["archive"] == {"name": ARCHIVE_NAME, "url": server.url,
                                   "sha256": hashlib.sha256(archive_bytes).hexdigest(), "bytes": len(archive_bytes)}
    assert result.absent == ["resnet110", "resnet32x4", "ResNet50", "wrn_40_2", "vgg13"]
    assert leftovers(dest) == sorted(["MANIFEST.json", *released])  # no archive, no .part file

    # A distillation experiment composed with paths.teachers=<dest> points at the fetched file, which loads.
    cfg = compose_config(["experiment=kd_resnet56_20", f"paths.teachers={dest}"])
    checkpoint = Path(cfg.teacher.checkpoint)
    assert checkpoint == dest / REL["resnet56"] and checkpoint.is_file()
    teacher = create_model(cfg.teacher.arch)
    load_model_weights(teacher, checkpoint, cfg.teacher.arch)
    stored = torch.load(io.BytesIO(released[REL["resnet56"]]), weights_only=True)["model"]
    assert all(torch.equal(v, stored[k]) for k, v in teacher.state_dict().items())


def test_present_verified_files_are_kept_without_any_download(server, released, tmp_path):
    server.publish(released)
    dest = tmp_path / "teachers"
    fetch_teachers(dest, url=server.url, progress=False)
    assert server.requests == 1

    again = fetch_teachers(dest, url=closed_port_url(), progress=False)  # no network needed
    assert [t.status for t in again.teachers] == ["already present, sha256 verified"] * 2
    assert server.requests == 1

    # A file that no longer matches its record needs the archive again; an edited teacher is never replaced
    # silently: kept (the error says so), replaced with force.
    edited = dest / REL["resnet8x4"]
    edited.write_bytes(checkpoint_bytes("resnet8x4", seed=7))
    with pytest.raises(DownloadFailed):
        fetch_teachers(dest, url=closed_port_url(), progress=False)
    with pytest.raises(TeachersError, match="differ from the released teachers and were kept") as err:
        fetch_teachers(dest, url=server.url, progress=False)
    assert str(edited) in str(err.value) and edited.read_bytes() != released[REL["resnet8x4"]]
    result = fetch_teachers(dest, url=server.url, progress=False, force=True)
    assert edited.read_bytes() == released[REL["resnet8x4"]]
    assert {t.arch: t.status for t in result.teachers} == {
        "resnet56": "already present, identical to the archive's",
        "resnet8x4": "replaced (--force): the file there differed from the archive's"}
    assert leftovers(dest) == sorted(["MANIFEST.json", *released])


def test_teachers_unpacked_by_hand_are_recorded_without_a_download(released, tmp_path, monkeypatch):
    """The offline route: the archive unpacked by hand into paths.teachers, then the command run once."""
    monkeypatch.setattr(fetch_module, "RELEASED_ARCHS", ARCHS)
    dest = tmp_path / "teachers"
    for rel, data in released.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes(data)
    first = fetch_teachers(dest, url=closed_port_url(), progress=False)
    assert [t.status for t in first.teachers] == [
        "found in place, sha256 recorded (no published checksum to check it against)"] * 2
    recorded = json.loads((dest / "MANIFEST.json").read_text())["files"]
    assert recorded[REL["resnet56"]] == {"sha256": hashlib.sha256(released[REL["resnet56"]]).hexdigest(),
                                         "bytes": len(released[REL["resnet56"]]), "origin": "found in place"}
    again = fetch_teachers(dest, url=closed_port_url(), progress=False)
    assert [t.status for t in again.teachers] == ["already present, sha256 verified"] * 2


def test_an_archive_with_another_checksum_is_refused_and_nothing_is_unpacked(server, released, tmp_path):
    server.publish(released)
    dest = tmp_path / "teachers"
    with pytest.raises(TeachersError, match=r"not the expected 0{64} \(--sha256\): it was refused"):
        fetch_teachers(dest, url=server.url, sha256="0" * 64, progress=False)
    assert leftovers(dest) == []

    # A release whose files differ from those recorded by the first fetch is refused as a whole.
    fetch_teachers(dest, url=server.url, progress=False)
    (dest / REL["resnet56"]).unlink()
    server.publish({rel: checkpoint_bytes(arch, seed=9) for arch, rel in REL.items()})
    with pytest.raises(TeachersError, match="refused and nothing was unpacked: resnet56_vanilla/ckpt_epoch_240.pth "
                                            "has sha256"):
        fetch_teachers(dest, url=server.url, progress=False)
    assert leftovers(dest) == sorted(["MANIFEST.json", REL["resnet8x4"]])


def test_a_file_with_a_pinned_checksum_must_match_it(server, released, tmp_path, monkeypatch):
    monkeypatch.setitem(fetch_module.KNOWN_SHA256, REL["resnet56"], "f" * 64)
    server.publish(released)
    with pytest.raises(TeachersError, match=f"{REL['resnet56']} has sha256 .* expected f{{64}}"):
        fetch_teachers(tmp_path / "teachers", url=server.url, progress=False)
    assert leftovers(tmp_path / "teachers") == []

    pinned = hashlib.sha256(released[REL["resnet56"]]).hexdigest()
    monkeypatch.setitem(fetch_module.KNOWN_SHA256, REL["resnet56"], pinned)
    result = fetch_teachers(tmp_path / "teachers", url=server.url, progress=False)
    assert [t.status for t in result.teachers] == ["unpacked, sha256 verified", "unpacked, sha256 recorded"]


@pytest.mark.parametrize("member, link", [
    ("cifar_teachers/../../escaped.pth", None),
    ("../escaped.pth", None),
    ("/tmp/escaped.pth", None),
    ("other_folder/resnet56_vanilla/ckpt_epoch_240.pth", None),
    ("cifar_teachers/resnet20_vanilla/ckpt_epoch_240.pth", "../../../escaped.pth"),
], ids=["dotdot-inside", "dotdot", "absolute", "outside-folder", "symlink"])
def test_members_leading_outside_the_destination_refuse_the_whole_archive(member, link, released, tmp_path):
    files = {f"cifar_teachers/{rel}": data for rel, data in released.items()}
    if link is None:
        files[member] = b"payload"
    archive = write_tar(tmp_path / ARCHIVE_NAME, files, links={member: link} if link else None)
    dest = tmp_path / "a" / "b" / "teachers"
    with pytest.raises(TeachersError, match="was refused and nothing was unpacked: ") as err:
        fetch_teachers(dest, archive=archive, progress=False)
    assert f"'{member}' " in str(err.value)
    assert leftovers(tmp_path) == [ARCHIVE_NAME]  # not even the good members were written


def test_offline_ends_in_one_paragraph_with_what_to_download_and_where_to_put_it(tmp_path):
    url = closed_port_url()
    dest = tmp_path / "teachers"
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "fetch_teachers.py"), "--url", url,
                          "--dest", str(dest), "--quiet"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr and run.stdout == ""
    paragraph = run.stderr.strip()
    assert "\n" not in paragraph
    for needed in (url, ARCHIVE_URL, ARCHIVE_NAME, "http://shape2prog.csail.mit.edu/repo/", "is gone",
                   f"--archive /path/to/{ARCHIVE_NAME}", f"{dest}/resnet32x4_vanilla/ckpt_epoch_240.pth",
                   f"the archive's cifar_teachers/ folder is {dest}"):
        assert needed in paragraph, needed
    assert leftovers(tmp_path) == []  # no partial download left behind


def test_cli_unpacks_a_hand_downloaded_archive_and_scores_each_teacher(released, tmp_path, fake_cifar_root, capsys):
    archive = write_tar(tmp_path / ARCHIVE_NAME, {f"cifar_teachers/{rel}": data for rel, data in released.items()})
    dest = tmp_path / "teachers"
    code = script.main(["--archive", str(archive), "--evaluate", "--quiet", f"paths.teachers={dest}",
                        f"paths.data={fake_cifar_root}", "dataset.verify_checksums=false",
                        "dataset.test_num_workers=0"])
    out = capsys.readouterr().out
    assert code == 0
    for arch in ARCHS:
        assert f"{dest / REL[arch]}  (unpacked, sha256 recorded)" in out
    assert "paths.teachers=" not in out  # the configured folder: nothing more to set
    # Each teacher's top-1 on the 64 generated test images, against a plain loop over the same images; resnet56
    # has a published number (configs/teacher/resnet56.yaml), resnet8x4 none.
    _, test_set = build_cifar100(fake_cifar_root, verify_checksums=False)
    images, labels = map(torch.stack, zip(*[(x, torch.tensor(y)) for x, y, *_ in test_set], strict=True))
    for arch, published in (("resnet56", 72.34), ("resnet8x4", None)):
        model = create_model(arch).eval()
        model.load_state_dict(torch.load(dest / REL[arch], weights_only=True)["model"])
        with torch.no_grad():
            acc1 = (model(images).argmax(1) == labels).float().mean().item() * 100
        extra = "" if published is None else f"  (published {published:.2f}, {acc1 - published:+.2f})"
        assert f"  {arch:<11} {acc1:6.2f}{extra}\n" in out


def test_evaluate_without_cifar100_says_where_it_looked(released, tmp_path, capsys):
    archive = write_tar(tmp_path / ARCHIVE_NAME, {f"cifar_teachers/{rel}": data for rel, data in released.items()})
    code = script.main(["--archive", str(archive), "--evaluate", "--quiet", f"--dest={tmp_path / 'elsewhere'}",
                        f"paths.data={tmp_path / 'nodata'}"])
    captured = capsys.readouterr()
    assert code == 2
    assert f"paths.teachers={tmp_path / 'elsewhere'}" in captured.out
    assert captured.err.startswith(f"CIFAR-100 not found: looked in {tmp_path / 'nodata' / 'cifar-100-python'}")
