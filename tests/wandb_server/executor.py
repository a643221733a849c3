"""Answer a GraphQL document from a tree of plain Python values, the way a GraphQL server would.

Why not a full schema: the SDK asks for large, version-specific selection sets, and the tests only care
that the values the SDK reads are right. Resolvers return dicts (and lists of dicts); a dict value may be
a callable taking the field's arguments, so fields with arguments (`project(name:)`, `artifact(name:)`)
are computed on demand. Fields a resolver does not provide answer `null`, as an unset nullable field does.
"""

from __future__ import annotations

from typing import Any

from graphql import parse
from graphql.language import ast

Resolved = Any


class GraphQLFailure(Exception):
    """An error the server reports in the response's `errors` list (the field's value becomes null)."""


def _value(node: ast.ValueNode, variables: dict) -> Any:
    if isinstance(node, ast.VariableNode):
        return variables.get(node.name.value)
    if isinstance(node, ast.IntValueNode):
        return int(node.value)
    if isinstance(node, ast.FloatValueNode):
        return float(node.value)
    if isinstance(node, ast.BooleanValueNode):
        return node.value
    if isinstance(node, ast.NullValueNode):
        return None
    if isinstance(node, ast.ListValueNode):
        return [_value(v, variables) for v in node.values]
    if isinstance(node, ast.ObjectValueNode):
        return {f.name.value: _value(f.value, variables) for f in node.fields}
    return node.value  # string and enum


class Execution:
    """One request: its fragments and variables, and the errors collected while answering it."""

    def __init__(self, query: str, variables: dict | None, operation_name: str | None):
        self.document = parse(query)
        self.variables = variables or {}
        self.fragments = {
            d.name.value: d for d in self.document.definitions if isinstance(d, ast.FragmentDefinitionNode)
        }
        operations = [d for d in self.document.definitions if isinstance(d, ast.OperationDefinitionNode)]
        self.operation = next((o for o in operations if o.name and o.name.value == operation_name), operations[0])
        self.errors: list[dict] = []

    @property
    def kind(self) -> str:
        return self.operation.operation.value  # "query" or "mutation"

    def run(self, root: dict) -> dict:
        return self._select(root, self.operation.selection_set, path=[])

    def _select(self, obj: Resolved, selection_set: ast.SelectionSetNode | None, path: list) -> Resolved:
        if obj is None or selection_set is None:
            return obj
        if isinstance(obj, list):
            return [self._select(item, selection_set, path + [i]) for i, item in enumerate(obj)]
        out: dict = {}
        for selection in selection_set.selections:
            if isinstance(selection, ast.FieldNode):
                self._field(obj, selection, out, path)
            elif isinstance(selection, ast.InlineFragmentNode):
                if self._applies(obj, selection.type_condition):
                    out.update(self._select(obj, selection.selection_set, path))
            elif isinstance(selection, ast.FragmentSpreadNode):
                fragment = self.fragments[selection.name.value]
                if self._applies(obj, fragment.type_condition):
                    out.update(self._select(obj, fragment.selection_set, path))
        return out

    def _applies(self, obj: dict, condition: ast.NamedTypeNode | None) -> bool:
        typename = obj.get("__typename")
        if condition is None or typename is None:
            return True
        return condition.name.value in (typename, *obj.get("__implements", ()))

    def _field(self, obj: dict, node: ast.FieldNode, out: dict, path: list) -> None:
        name = node.name.value
        key = node.alias.value if node.alias else name
        value = obj.get(name)
        if callable(value):
            args = {a.name.value: _value(a.value, self.variables) for a in node.arguments}
            try:
                value = value(**args)
            except GraphQLFailure as exc:
                self.errors.append({"message": str(exc), "path": path + [key]})
                value = None
        nested = self._select(value, node.selection_set, path + [key]) if node.selection_set else value
        if key in out and isinstance(out[key], dict) and isinstance(nested, dict):
            out[key].update(nested)  # the same field selected twice (fragments): merge
        else:
            out[key] = nested
