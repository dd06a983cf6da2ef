"""Compares the descriptors protox built (build.rs writes OUT_DIR/protos.fds)
with the wheels': python proto/check_descriptors.py target/debug/build/jina-wasm-*/out/protos.fds"""
import sys, os
os.environ["JINA_OPTOUT_TELEMETRY"]="1"
from google.protobuf import descriptor_pb2 as d
import jina.proto.docarray_v2.pb.jina_pb2 as j
import docarray.proto.pb.docarray_pb2 as dp
fds = d.FileDescriptorSet(); fds.ParseFromString(open(sys.argv[1],'rb').read())
def norm(fd):
    fd.ClearField("source_code_info")
    def strip(m):
        for f in m.field: f.ClearField("json_name")
        for n in m.nested_type: strip(n)
    for m in fd.message_type: strip(m)
    return fd
for mod in (j, dp):
    want = d.FileDescriptorProto(); mod.DESCRIPTOR.CopyToProto(want)
    got = [f for f in fds.file if f.name == want.name][0]
    a, b = norm(d.FileDescriptorProto.FromString(got.SerializeToString())), norm(want)
    print(want.name, "equal" if a == b else "DIFFERENT")
    if a != b:
        import difflib
        print("\n".join(difflib.unified_diff(str(b).splitlines(), str(a).splitlines(), lineterm="", n=2)))
