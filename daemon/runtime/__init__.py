"""Running the roles: one supervised process (`fusewatch run`), its signals, and the embedded services."""
