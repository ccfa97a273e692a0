"""Demonstrations: Unity ML-Agents `.demo` recordings read into arrays (reader.py), checked
against a behavior (check.py), written in Unity's layout (writer.py) and recorded from any
environment (record.py). docs/imitation.md describes them."""
