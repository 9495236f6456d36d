"""The simulation math, written once against the Array API plus the primitives a backend supplies."""
