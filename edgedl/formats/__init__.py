"""One package per artifact format: what its libraries do, behind edgedl types."""
