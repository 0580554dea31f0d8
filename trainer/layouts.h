// layouts.h: struct layouts by name, for bindings that mirror C structs (the Python tests' ctypes).
#pragma once

// sizeof(type) and offsetof(type, field) of a mirrored struct; -1 for a name this table does not hold.
long ccvit_sizeof(const char *type);
long ccvit_offsetof(const char *type, const char *field);
