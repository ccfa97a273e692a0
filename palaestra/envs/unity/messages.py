"""The messages of ML-Agents' communicator (package ``communicator_objects``), declared once here
as a table and turned into protobuf classes when this module is imported.

Declaring them in Python instead of compiling ``.proto`` files means no ``protoc`` or
grpcio-tools at build or install time and no generated code tied to one protobuf release: the
classes are built from a ``FileDescriptorProto`` by whatever protobuf is installed. The field
numbers, types and names on the wire are those of communicator API 1.0.0 (ML-Agents 0.16) plus
the fields the 1.x APIs added up to 1.5.0 (action specs, observation specs, multi-agent groups,
training analytics); fields retired by ML-Agents keep their numbers free. For readers and other
tools, ``python -m palaestra.envs.unity.messages > unity.proto`` prints the same table as a
``.proto`` file; no copy is kept beside this one, so the table stays the only definition.
"""

from __future__ import annotations

import sys
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool

PACKAGE = "communicator_objects"

# enum name -> [(value name, number)]
ENUMS: dict[str, list[tuple[str, int]]] = {
    "CommandProto": [("STEP", 0), ("RESET", 1), ("QUIT", 2)],
    "SpaceTypeProto": [("discrete", 0), ("continuous", 1)],
    "CompressionTypeProto": [("NONE", 0), ("PNG", 1)],
    "ObservationTypeProto": [("DEFAULT", 0), ("GOAL_SIGNAL", 1)],
}

# message name (nested ones as Outer.Inner) -> [(field name, number, type, oneof group or None)];
# a type is a scalar, an enum or a message name, "repeated <type>" or "map<string, <type>>"
MESSAGES: dict[str, list[tuple[str, int, str, str | None]]] = {
    "HeaderProto": [("status", 1, "int32", None), ("message", 2, "string", None)],
    "UnityRLCapabilitiesProto": [
        ("baseRLCapabilities", 1, "bool", None),           # API 1.0
        ("concatenatedPngObservations", 2, "bool", None),  # 1.1: several PNGs in one compressed_data
        ("compressedChannelMapping", 3, "bool", None),     # 1.2
        ("hybridActions", 4, "bool", None),                # 1.3: continuous and discrete together
        ("trainingAnalytics", 5, "bool", None),            # 1.4
        ("variableLengthObservation", 6, "bool", None),    # 1.5
        ("multiAgentGroups", 7, "bool", None),             # 1.5
    ],
    "ObservationProto.FloatData": [("data", 1, "repeated float", None)],
    "ObservationProto": [
        ("shape", 1, "repeated int32", None),
        ("compression_type", 2, "CompressionTypeProto", None),
        ("compressed_data", 3, "bytes", "observation_data"),
        ("float_data", 4, "ObservationProto.FloatData", "observation_data"),
        ("compressed_channel_mapping", 5, "repeated int32", None),
        ("dimension_properties", 6, "repeated int32", None),  # 1.5: which axis is what (1 = channels)
        ("observation_type", 7, "ObservationTypeProto", None),
        ("name", 8, "string", None),
    ],
    "AgentInfoProto": [
        ("reward", 7, "float", None),
        ("done", 8, "bool", None),
        ("max_step_reached", 9, "bool", None),
        ("id", 10, "int32", None),
        ("action_mask", 11, "repeated bool", None),  # True: the action is unavailable
        ("observations", 13, "repeated ObservationProto", None),
        ("group_id", 14, "int32", None),
        ("group_reward", 15, "float", None),
    ],
    "AgentActionProto": [
        ("vector_actions", 1, "repeated float", None),  # up to API 1.2; Unity 1.3+ reads only 6 and 7
        ("value", 4, "float", None),
        ("continuous_actions", 6, "repeated float", None),
        ("discrete_actions", 7, "repeated int32", None),
    ],
    "AgentInfoActionPairProto": [
        ("agent_info", 1, "AgentInfoProto", None),
        ("action_info", 2, "AgentActionProto", None),
    ],
    "ActionSpecProto": [
        ("num_continuous_actions", 1, "int32", None),
        ("num_discrete_actions", 2, "int32", None),
        ("discrete_branch_sizes", 3, "repeated int32", None),
        ("action_descriptions", 4, "repeated string", None),
    ],
    "BrainParametersProto": [
        ("vector_action_size", 3, "repeated int32", None),  # up to API 1.2, with the space type
        ("vector_action_descriptions", 5, "repeated string", None),
        ("vector_action_space_type", 6, "SpaceTypeProto", None),
        ("brain_name", 7, "string", None),
        ("is_training", 8, "bool", None),
        ("action_spec", 9, "ActionSpecProto", None),  # API 1.3+
    ],
    "EngineConfigurationProto": [
        ("width", 1, "int32", None), ("height", 2, "int32", None), ("quality_level", 3, "int32", None),
        ("time_scale", 4, "float", None), ("target_frame_rate", 5, "int32", None),
        ("show_monitor", 6, "bool", None),
    ],
    "CustomResetParametersProto": [],
    "DemonstrationMetaProto": [
        ("api_version", 1, "int32", None), ("demonstration_name", 2, "string", None),
        ("number_steps", 3, "int32", None), ("number_episodes", 4, "int32", None),
        ("mean_reward", 5, "float", None),
    ],
    "UnityRLInitializationInputProto": [
        ("seed", 1, "int32", None),
        ("communication_version", 2, "string", None),
        ("package_version", 3, "string", None),
        ("capabilities", 4, "UnityRLCapabilitiesProto", None),
        ("num_areas", 5, "int32", None),
    ],
    "UnityRLInitializationOutputProto": [
        ("name", 1, "string", None),
        ("communication_version", 2, "string", None),
        ("log_path", 3, "string", None),
        ("brain_parameters", 5, "repeated BrainParametersProto", None),
        ("package_version", 7, "string", None),
        ("capabilities", 8, "UnityRLCapabilitiesProto", None),
    ],
    "UnityRLInputProto.ListAgentActionProto": [("value", 1, "repeated AgentActionProto", None)],
    "UnityRLInputProto": [
        ("agent_actions", 1, "map<string, UnityRLInputProto.ListAgentActionProto>", None),
        ("command", 4, "CommandProto", None),
        ("side_channel", 5, "bytes", None),
    ],
    "UnityRLOutputProto.ListAgentInfoProto": [("value", 1, "repeated AgentInfoProto", None)],
    "UnityRLOutputProto": [
        ("agentInfos", 2, "map<string, UnityRLOutputProto.ListAgentInfoProto>", None),
        ("side_channel", 3, "bytes", None),
    ],
    "UnityInputProto": [
        ("rl_input", 1, "UnityRLInputProto", None),
        ("rl_initialization_input", 2, "UnityRLInitializationInputProto", None),
    ],
    "UnityOutputProto": [
        ("rl_output", 1, "UnityRLOutputProto", None),
        ("rl_initialization_output", 2, "UnityRLInitializationOutputProto", None),
    ],
    "UnityMessageProto": [
        ("header", 1, "HeaderProto", None),
        ("unity_output", 2, "UnityOutputProto", None),
        ("unity_input", 3, "UnityInputProto", None),
    ],
    "TrainingEnvironmentInitialized": [
        ("mlagents_version", 1, "string", None), ("mlagents_envs_version", 2, "string", None),
        ("python_version", 3, "string", None), ("torch_version", 4, "string", None),
        ("torch_device_type", 5, "string", None), ("num_envs", 6, "int32", None),
        ("num_environment_parameters", 7, "int32", None), ("run_options", 8, "string", None),
    ],
    "TrainingBehaviorInitialized": [
        ("behavior_name", 1, "string", None), ("trainer_type", 2, "string", None),
        ("extrinsic_reward_enabled", 3, "bool", None), ("gail_reward_enabled", 4, "bool", None),
        ("curiosity_reward_enabled", 5, "bool", None), ("rnd_reward_enabled", 6, "bool", None),
        ("behavioral_cloning_enabled", 7, "bool", None), ("recurrent_enabled", 8, "bool", None),
        ("visual_encoder", 9, "string", None), ("num_network_layers", 10, "int32", None),
        ("num_network_hidden_units", 11, "int32", None), ("trainer_threaded", 12, "bool", None),
        ("self_play_enabled", 13, "bool", None), ("curriculum_enabled", 14, "bool", None),
        ("config", 15, "string", None),
    ],
}

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
    return {name: get_class(pool.FindMessageTypeByName(f"{PACKAGE}.{name}")) for name in MESSAGES}


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
    """The table above as a ``.proto`` file (proto3)."""
    lines = ["// Printed by `python -m palaestra.envs.unity.messages` from the table in",
             "// palaestra/envs/unity/messages.py.", 'syntax = "proto3";', f"package {PACKAGE};", ""]
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


if __name__ == "__main__":
    sys.stdout.write(proto_text())
