"""Administrative services shared by the CLI and the admin pages."""
