"""The models, pure: the config, the manifest, the desired container (the layout contract), the
container as the engine shows it, the plan, PostgreSQL connection strings and the safe YAML loader."""
