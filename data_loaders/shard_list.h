// shard_list.h: brace expansion of shard patterns, WebDataset style.
#pragma once

// Expand "dir/train-{000000..000146}.tar" (zero-padded ranges keep their
// width), "{a,b,c}" alternatives, nested braces, and several patterns
// separated by whitespace or top-level commas. Returns a malloc'd array of
// malloc'd strings (free with shard_list_free); *n = count. fatal() on an
// unbalanced brace or a range over 10 million names, naming the pattern.
char **shard_list_expand(const char *patterns, int *n);
void shard_list_free(char **list, int n);
