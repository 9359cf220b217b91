"""The mapping language: YAML rules with JMESPath expressions, compiled once at load."""

from livegate.mapping.errors import MappingError
from livegate.mapping.loader import Mappings, load_mappings

__all__ = ["MappingError", "Mappings", "load_mappings"]
