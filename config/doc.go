// Package config holds docxy's TOML configuration: its schema, built-in defaults and validation.
package config
