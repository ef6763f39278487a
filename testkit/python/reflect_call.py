"""Calls a quiver node the way a stock Python gRPC user would: grpcio, with the message
types learnt from the server's reflection service (grpcio-reflection speaks
grpc.reflection.v1alpha) -- no quiver code, no .proto files.

    reflect_call.py HOST:PORT METHOD REQUEST_JSON [TOKEN]

METHOD is "package.Service/Method". Prints one JSON line: {"ok": <response as protobuf
JSON>} or {"code": "<gRPC status name>", "details": "..."}. Doubles keep their exact
value: json.dumps writes the shortest repr that parses back to the same bits.
"""
import json
import sys

import grpc
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main():
    addr, method, request_json = sys.argv[1], sys.argv[2], sys.argv[3]
    token = sys.argv[4] if len(sys.argv) > 4 else None
    metadata = [("authorization", f"Bearer {token}")] if token else None
    channel = grpc.insecure_channel(addr)
    service_name, method_name = method.split("/")
    try:
        db = ProtoReflectionDescriptorDatabase(channel)
        pool = DescriptorPool(db)
        service = pool.FindServiceByName(service_name)
    except grpc.RpcError as e:
        print(json.dumps({"code": e.code().name, "details": e.details(), "stage": "reflection"}))
        return
    m = service.FindMethodByName(method_name)
    request_cls = message_factory.GetMessageClass(m.input_type)
    response_cls = message_factory.GetMessageClass(m.output_type)
    call = channel.unary_unary(
        f"/{method}",
        request_serializer=request_cls.SerializeToString,
        response_deserializer=response_cls.FromString,
    )
    request = json_format.Parse(request_json, request_cls())
    try:
        response = call(request, metadata=metadata, timeout=30)
    except grpc.RpcError as e:
        print(json.dumps({"code": e.code().name, "details": e.details()}))
        return
    print(json.dumps({"ok": json_format.MessageToDict(response)}))


main()
