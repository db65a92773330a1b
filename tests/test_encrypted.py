"""Encrypted recordings (record --encrypt-to): the age format, read back with
--identity, by pt_engine.client and by Debian's `age` command; truncated and
altered files are errors naming the problem; the plaintext never reaches the disk.
"""
import shutil
import subprocess

import msgpack
import pytest

pyrage = pytest.importorskip("pyrage", reason="pyrage is not installed (pip install -e '.[test]')")

from pt_engine import client
from pt_engine.cli import main
from pt_engine.errors import StreamError
from streams import CORPUS

MANY = CORPUS / "ppp_many-protocols.pcap"      # 4709 packets, 52 windows


@pytest.fixture
def keys(tmp_path):
    """(public key text, key file path) of a fresh age identity."""
    ident = pyrage.x25519.Identity.generate()
    path = tmp_path / "key.txt"
    path.write_text(f"# created by the test\n{ident}\n")
    return str(ident.to_public()), str(path)


def record(tmp_path, recipient, *extra):
    out = tmp_path / "rec.msgpack"
    assert main(["record", str(out), "-r", str(MANY), "--encrypt-to", recipient,
                 *extra]) == 0
    return out


def plain_records(tmp_path):
    out = tmp_path / "plain.msgpack"
    assert main(["record", str(out), "-r", str(MANY)]) == 0
    return list(msgpack.Unpacker(open(out, "rb"), raw=False)), out.read_bytes()


def test_round_trip_equals_plain_recording(tmp_path, keys):
    recipient, keyfile = keys
    enc = record(tmp_path, recipient)
    got = list(client.iter_records(str(enc), identity=keyfile))
    plain, _ = plain_records(tmp_path)
    assert [r["type"] for r in got].count("window") == 52
    strip = lambda recs: [{k: v for k, v in r.items() if k != "engine_version"} for r in recs]
    assert strip(got) == strip(plain)


def test_plaintext_never_on_disk(tmp_path, keys):
    recipient, _ = keys
    data = record(tmp_path, recipient).read_bytes()
    assert data.startswith(b"age-encryption.org/v1\n")
    _, plain = plain_records(tmp_path)
    for known in (b"pt-engine", b"hello", b"window", b"summary", b"ports_selected",
                  plain[:64]):
        assert known in plain
        assert known not in data
    assert list(tmp_path.iterdir()) and all(
        p.name in ("rec.msgpack", "plain.msgpack", "key.txt") for p in tmp_path.iterdir())


def test_file_mode_is_0600(tmp_path, keys):
    assert record(tmp_path, keys[0]).stat().st_mode & 0o777 == 0o600


@pytest.mark.skipif(shutil.which("age") is None, reason="the age command is not installed "
                    "(apt-get install age)")
def test_age_command_decrypts_to_a_plain_recording(tmp_path, keys):
    recipient, keyfile = keys
    enc = record(tmp_path, recipient)
    out = subprocess.run(["age", "-d", "-i", keyfile, str(enc)], capture_output=True,
                         check=True).stdout
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(out)
    recs = list(unpacker)
    assert recs[0]["type"] == "hello" and recs[-1]["type"] == "summary"
    assert sum(r["type"] == "window" for r in recs) == 52


def test_truncated_file_is_an_error(tmp_path, keys):
    recipient, keyfile = keys
    enc = record(tmp_path, recipient)
    data = enc.read_bytes()
    for cut in (len(data) - 1, len(data) // 2):
        enc.write_bytes(data[:cut])
        with pytest.raises(StreamError, match="truncated or altered"):
            list(client.iter_records(str(enc), identity=keyfile))


def test_one_flipped_byte_is_an_error(tmp_path, keys, capsys):
    recipient, keyfile = keys
    enc = record(tmp_path, recipient)
    data = bytearray(enc.read_bytes())
    data[len(data) // 2] ^= 0x01
    enc.write_bytes(bytes(data))
    with pytest.raises(StreamError, match="truncated or altered"):
        list(client.iter_records(str(enc), identity=keyfile))
    assert main(["plot", str(enc), "-o", str(tmp_path / "x.png"), "--identity", keyfile]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "truncated or altered" in err[0]


def test_no_identity_and_wrong_identity(tmp_path, keys, capsys):
    recipient, _ = keys
    enc = record(tmp_path, recipient)
    with pytest.raises(StreamError, match="--identity"):
        list(client.iter_records(str(enc)))
    other = tmp_path / "other.txt"
    other.write_text(f"{pyrage.x25519.Identity.generate()}\n")
    with pytest.raises(StreamError, match="another key"):
        list(client.iter_records(str(enc), identity=str(other)))
    bad = tmp_path / "bad.txt"
    bad.write_text("not a key\n")
    assert main(["plot", str(enc), "-o", str(tmp_path / "x.png"), "--identity", str(bad)]) == 2
    assert "line 1 is not an age secret key" in capsys.readouterr().err


def test_bad_recipient_is_a_usage_error(tmp_path, capsys):
    assert main(["record", str(tmp_path / "r"), "-r", str(MANY), "--encrypt-to",
                 "age1nope"]) == 2
    assert "not an age public key" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_rotation_each_file_a_complete_age_stream(tmp_path, keys):
    recipient, keyfile = keys
    enc = record(tmp_path, recipient, "--max-size", "0.01", "--keep", "50")
    files = sorted(tmp_path.glob("rec.msgpack*"))
    assert len(files) >= 2
    windows = 0
    for path in files:
        assert path.read_bytes().startswith(b"age-encryption.org/v1\n")
        recs = list(client.iter_records(str(path), identity=keyfile))
        assert recs[0]["type"] == "hello"
        windows += sum(r["type"] == "window" for r in recs)
    assert windows == 52


def test_existing_file_is_rotated_not_appended(tmp_path, keys):
    recipient, keyfile = keys
    record(tmp_path, recipient)
    record(tmp_path, recipient)
    for path in (tmp_path / "rec.msgpack", tmp_path / "rec.msgpack.1"):
        recs = list(client.iter_records(str(path), identity=keyfile))
        assert sum(r["type"] == "window" for r in recs) == 52
