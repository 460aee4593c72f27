"""Tables, the engine/session factory, the queries and the migrations."""
