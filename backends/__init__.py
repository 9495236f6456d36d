"""Array-framework backends of tfmm (installed as ``tfmm.backends``); each is imported lazily."""
