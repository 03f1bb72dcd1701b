"""Build hook: generate recframe/protos/*_pb2.py(i) from protos/ with grpcio-tools.

The generated modules, and a copy of each .proto source (shipped in the wheel: the schema a
config is written against), are written into the source tree (so editable installs see them)
before the ordinary build_py copies the package into the build directory.
"""

import glob
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))


def generate_protos() -> None:
    """Run protoc (from grpcio-tools) over every .proto under protos/."""
    from grpc_tools import protoc  # build-time dependency

    proto_root = os.path.join(ROOT, "protos")
    sources = sorted(glob.glob(os.path.join(proto_root, "recframe", "protos", "*.proto")))
    if not sources:
        raise RuntimeError(f"no .proto files under {proto_root}/recframe/protos")
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{include}",
        f"--python_out={ROOT}",
        f"--pyi_out={ROOT}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed on " + " ".join(sources))
    # The gRPC service stubs (serving_pb2_grpc.py: `recframe serve` and its client).
    services = [s for s in sources if os.path.basename(s) == "serving.proto"]
    if services and protoc.main([*args[:3], f"--grpc_python_out={ROOT}", *services]) != 0:
        raise RuntimeError("protoc failed on the gRPC service of " + " ".join(services))
    for source in sources:
        shutil.copyfile(source, os.path.join(ROOT, "recframe", "protos", os.path.basename(source)))


class BuildPyWithProtos(build_py):
    """build_py that generates the protobuf modules first."""

    def run(self) -> None:
        generate_protos()
        super().run()


setup(cmdclass={"build_py": BuildPyWithProtos})
