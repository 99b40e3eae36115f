"""The two messages of the standard gRPC health service (grpc.health.v1.Health/Check).

Built from a descriptor in a private pool so the SDK needs neither grpcio-health-checking nor
generated code for them, and cannot clash with grpc_health's own registration of the same names.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

CHECK_PATH = "/grpc.health.v1.Health/Check"
STATUSES = ("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")


def _build() -> tuple[type, type]:
    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="recsys_client/grpc_health_v1.proto", package="grpc.health.v1", syntax="proto3"
    )
    request = file.message_type.add(name="HealthCheckRequest")
    request.field.add(name="service", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    response = file.message_type.add(name="HealthCheckResponse")
    status = response.enum_type.add(name="ServingStatus")
    for number, name in enumerate(STATUSES):
        status.value.add(name=name, number=number)
    response.field.add(
        name="status",
        number=1,
        type=field.TYPE_ENUM,
        label=field.LABEL_OPTIONAL,
        type_name=".grpc.health.v1.HealthCheckResponse.ServingStatus",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    request_cls, response_cls = (
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{file.package}.{name}"))
        for name in ("HealthCheckRequest", "HealthCheckResponse")
    )
    return request_cls, response_cls


HealthCheckRequest, HealthCheckResponse = _build()


def status_name(response: object) -> str:
    """The ServingStatus name of a HealthCheckResponse ("SERVING", "NOT_SERVING"...)."""
    number = response.status  # type: ignore[attr-defined]
    return STATUSES[number] if 0 <= number < len(STATUSES) else f"STATUS_{number}"
