"""The messages of ML-Agents' communicator (package ``communicator_objects``), turned into protobuf
classes when this module is imported, from their one definition: the table in
``communicator.yaml`` beside this file (message and field names, numbers, types, oneof groups).

Declaring them as data instead of compiling ``.proto`` files means no ``protoc`` or grpcio-tools
at build or install time and no generated code tied to one protobuf release: the classes are built
from a ``FileDescriptorProto`` by whatever protobuf is installed. For readers and other tools,
``python -m palaestra.envs.unity.proto > unity.proto`` prints the same table as a ``.proto``
file; no copy is kept, so the table stays the only definition.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from google.protobuf import descriptor_pb2, descriptor_pool

PACKAGE = "communicator_objects"
TABLE = Path(__file__).with_name("communicator.yaml")


def _read_table() -> tuple[dict[str, list[tuple[str, int]]], dict[str, list[tuple[str, int, str, str | None]]]]:
    """``(enums, messages)``: enum name -> [(value name, number)]; message name (nested ones as
    Outer.Inner) -> [(field name, number, type, oneof group or None)]."""
    try:
        table = yaml.safe_load(TABLE.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:  # a broken installation, not a user's mistake
        raise ImportError(f"cannot read the Unity message table {TABLE}: {exc}; reinstall palaestra") from exc
    enums = {name: list(values.items()) for name, values in table["enums"].items()}
    messages = {name: [(field, spec[0], spec[1], spec[2] if len(spec) > 2 else None)
                       for field, spec in (fields or {}).items()]
                for name, fields in table["messages"].items()}
    return enums, messages


ENUMS, MESSAGES = _read_table()

SERVICE = "UnityToExternalProto"
EXCHANGE = f"/{PACKAGE}.{SERVICE}/Exchange"  # the one RPC: UnityMessageProto -> UnityMessageProto

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {"int32": _F.TYPE_INT32, "float": _F.TYPE_FLOAT, "bool": _F.TYPE_BOOL,
            "string": _F.TYPE_STRING, "bytes": _F.TYPE_BYTES}


def _entry_name(field_name: str) -> str:  # protoc's name for a map field's entry message
    return "".join(part[:1].upper() + part[1:] for part in field_name.split("_")) + "Entry"


def _set_type(field: Any, type_name: str) -> None:
    if type_name in _SCALARS:
        field.type = _SCALARS[type_name]
    elif type_name in ENUMS:
        field.type, field.type_name = _F.TYPE_ENUM, f".{PACKAGE}.{type_name}"
    else:
        field.type, field.type_name = _F.TYPE_MESSAGE, f".{PACKAGE}.{type_name}"


def _add_message(container: Any, name: str) -> Any:
    message = container.add()
    message.name = full = name
    oneofs: list[str] = []
    for field_name, number, kind, oneof in MESSAGES[full]:
        field = message.field.add()
        field.name, field.number, field.label = field_name, number, _F.LABEL_OPTIONAL
        if kind.startswith("map<"):
            value_type = kind[len("map<string, "):-1]
            entry = message.nested_type.add()
            entry.name = _entry_name(field_name)
            entry.options.map_entry = True
            for entry_field, entry_number, entry_type in (("key", 1, "string"), ("value", 2, value_type)):
                f = entry.field.add()
                f.name, f.number, f.label = entry_field, entry_number, _F.LABEL_OPTIONAL
                _set_type(f, entry_type)
            field.label = _F.LABEL_REPEATED
            field.type, field.type_name = _F.TYPE_MESSAGE, f".{PACKAGE}.{full}.{entry.name}"
            continue
        if kind.startswith("repeated "):
            field.label, kind = _F.LABEL_REPEATED, kind[len("repeated "):]
        _set_type(field, kind)
        if oneof is not None:
            if oneof not in oneofs:
                oneofs.append(oneof)
                message.oneof_decl.add().name = oneof
            field.oneof_index = oneofs.index(oneof)
    return message


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(name="palaestra/unity.proto", package=PACKAGE, syntax="proto3")
    for enum_name, values in ENUMS.items():
        enum = file.enum_type.add(name=enum_name)
        for value_name, number in values:
            enum.value.add(name=value_name, number=number)
    for name in MESSAGES:
        if "." in name:
            continue  # added inside its outer message, below
        message = _add_message(file.message_type, name)
        for nested in (n for n in MESSAGES if n.startswith(name + ".")):
            inner_message = message.nested_type.add()
            inner_message.CopyFrom(_nested(nested))
    return file


def _nested(full_name: str) -> descriptor_pb2.DescriptorProto:
    holder = descriptor_pb2.FileDescriptorProto()
    message = _add_message(holder.message_type, full_name)
    message.name = full_name.rpartition(".")[2]
    return message


def _message_classes() -> dict[str, type]:
    # a pool of our own, so that another copy of these definitions in the process (mlagents-envs)
    # cannot clash with this one
    from google.protobuf import message_factory

    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file_descriptor())
    get_class = getattr(message_factory, "GetMessageClass", None)
    if get_class is None:  # protobuf < 4.21
        factory = message_factory.MessageFactory(pool)
        get_class = factory.GetPrototype
    classes = {name: get_class(pool.FindMessageTypeByName(f"{PACKAGE}.{name}")) for name in MESSAGES}
    for name, cls in classes.items():  # Outer.Inner as an attribute, as protobuf 4.21 on sets it
        outer, _, inner = name.rpartition(".")
        if outer and not hasattr(classes[outer], inner):
            setattr(classes[outer], inner, cls)
    return classes


_CLASSES = _message_classes()
UnityMessageProto = _CLASSES["UnityMessageProto"]
UnityOutputProto = _CLASSES["UnityOutputProto"]
UnityInputProto = _CLASSES["UnityInputProto"]
UnityRLInputProto = _CLASSES["UnityRLInputProto"]
UnityRLOutputProto = _CLASSES["UnityRLOutputProto"]
UnityRLInitializationInputProto = _CLASSES["UnityRLInitializationInputProto"]
UnityRLInitializationOutputProto = _CLASSES["UnityRLInitializationOutputProto"]
UnityRLCapabilitiesProto = _CLASSES["UnityRLCapabilitiesProto"]
BrainParametersProto = _CLASSES["BrainParametersProto"]
ActionSpecProto = _CLASSES["ActionSpecProto"]
AgentInfoProto = _CLASSES["AgentInfoProto"]
AgentActionProto = _CLASSES["AgentActionProto"]
ObservationProto = _CLASSES["ObservationProto"]
HeaderProto = _CLASSES["HeaderProto"]
TrainingEnvironmentInitialized = _CLASSES["TrainingEnvironmentInitialized"]
TrainingBehaviorInitialized = _CLASSES["TrainingBehaviorInitialized"]
STEP, RESET, QUIT = 0, 1, 2  # CommandProto
NONE, PNG = 0, 1  # CompressionTypeProto
DISCRETE, CONTINUOUS = 0, 1  # SpaceTypeProto


def proto_text() -> str:
    """The message table as a ``.proto`` file (proto3)."""
    lines = ["// Printed by `python -m palaestra.envs.unity.proto` from the table in",
             "// palaestra/envs/unity/communicator.yaml.", 'syntax = "proto3";', f"package {PACKAGE};", ""]
    for enum_name, values in ENUMS.items():
        lines += [f"enum {enum_name} {{"] + [f"  {v} = {n};" for v, n in values] + ["}", ""]

    def body(name: str, indent: str) -> list[str]:
        out = [f"{indent}message {name.rpartition('.')[2]} {{"]
        for nested in (n for n in MESSAGES if n.startswith(name + ".") and "." not in n[len(name) + 1:]):
            out += body(nested, indent + "  ")
        open_oneof = None
        for field_name, number, kind, oneof in MESSAGES[name]:
            if oneof != open_oneof:
                if open_oneof is not None:
                    out.append(f"{indent}  }}")
                if oneof is not None:
                    out.append(f"{indent}  oneof {oneof} {{")
                open_oneof = oneof
            pad = "    " if oneof else "  "
            out.append(f"{indent}{pad}{kind} {field_name} = {number};")
        if open_oneof is not None:
            out.append(f"{indent}  }}")
        return out + [f"{indent}}}"]

    for name in (n for n in MESSAGES if "." not in n):
        lines += body(name, "") + [""]
    lines += [f"service {SERVICE} {{", "  rpc Exchange(UnityMessageProto) returns (UnityMessageProto);", "}", ""]
    return "\n".join(lines)
