"""The `fusewatch` command line: argument parsing, and one function per subcommand."""
