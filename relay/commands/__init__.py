"""The CLI's subcommands that work on the store; each is `async def (config, args) -> exit code`."""
