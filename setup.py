"""Build pt-engine: the Cython core (ext/) lands inside the engine package as engine._core."""
import os
import shutil
import sys
import sysconfig

from setuptools import Extension, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEBUG = os.environ.get("PT_ENGINE_DEBUG") == "1"
# PT_ENGINE_SANITIZE=1: AddressSanitizer + UndefinedBehaviorSanitizer, for fuzzing
# (docs/fuzzing.md); run Python with LD_PRELOAD=$(gcc -print-file-name=libasan.so).
SANITIZE = os.environ.get("PT_ENGINE_SANITIZE") == "1"
_SANITIZER_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
                    "-fno-omit-frame-pointer", "-g", "-O1"]


def _require(condition, message):
    if not condition:
        raise RuntimeError(message)


def _find_pcap_header():
    for d in ("/usr/include", "/usr/local/include", "/opt/homebrew/include"):
        if os.path.exists(os.path.join(d, "pcap", "pcap.h")):
            return True
    return False


def _extensions():
    building = any(a.startswith(("build", "bdist", "install", "develop", "editable"))
                   for a in sys.argv[1:])
    if building:
        cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
        _require(shutil.which(cc) or shutil.which("cc"),
                 f"pt-engine needs a C compiler ({cc}) to build its core: "
                 "install one (Debian: apt-get install build-essential).")
        _require(_find_pcap_header(),
                 "pt-engine needs libpcap's headers (pcap/pcap.h) to build its core: "
                 "install them (Debian: apt-get install libpcap-dev).")
    try:
        from Cython.Build import cythonize
    except ImportError as err:
        raise RuntimeError("pt-engine needs Cython >= 3 to build its core: "
                           "pip install 'cython>=3'.") from err
    flags = dict(
        extra_compile_args=(_SANITIZER_FLAGS if SANITIZE
                            else ["-O0", "-g"] if DEBUG else ["-O3"]),
        extra_link_args=_SANITIZER_FLAGS if SANITIZE else [],
        define_macros=[("CYTHON_TRACE_NOGIL", "1")] if DEBUG else [],
    )
    exts = [
        Extension("pt_engine._core", ["ext/_core.pyx"], libraries=["pcap"], **flags),
        # The TCP quality counter (docs/quality-rules.md); needs no libpcap.
        Extension("pt_engine._quality", ["ext/quality.pyx"], **flags),
        # TCP connect probes in batches (pt_engine.probe.connect); needs no libpcap.
        Extension("pt_engine._connect", ["ext/connect.pyx"], **flags),
        # the SYNs of scan --syn and their answers (pt_engine.probe.syn).
        Extension("pt_engine._syn", ["ext/syn.pyx"], **flags),
        # The top talkers counter (engine/analysers/talkers.py); needs no libpcap.
        Extension("pt_engine._talkers", ["ext/talkers.pyx"], **flags),
    ]
    directives = {"linetrace": True} if DEBUG else {}
    return cythonize(exts, include_path=[os.path.join(ROOT, "ext")],
                     compiler_directives=directives, annotate=DEBUG)


setup(ext_modules=_extensions())
