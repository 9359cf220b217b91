"""The mapping language: YAML rules with JMESPath expressions, compiled once at load."""

from engine.mapping.errors import MappingError
from engine.mapping.loader import Mappings, load_mappings

__all__ = ["MappingError", "Mappings", "load_mappings"]
