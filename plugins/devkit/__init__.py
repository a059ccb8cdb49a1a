"""The plugin author's kit: `cortex plugin new NAME`, `cortex plugin codegen`, and the hook reference."""
