/* The examples' one file reader (classify.c, stream.c): a whole file into a static buffer. */
#ifndef EDGESNN_EXAMPLE_READ_FILE_H
#define EDGESNN_EXAMPLE_READ_FILE_H

#include <stdint.h>
#include <stdio.h>

/* Read a whole file into `buffer`; return its length, or -1 (message printed) if it does not fit. */
static long read_file(const char *path, uint8_t *buffer, size_t buffer_bytes) {
    FILE *file = fopen(path, "rb");
    if (file == NULL) {
        fprintf(stderr, "error: cannot open %s\n", path);
        return -1;
    }
    size_t length = fread(buffer, 1, buffer_bytes, file);
    int too_long = length == buffer_bytes && fgetc(file) != EOF;
    fclose(file);
    if (too_long) {
        fprintf(stderr, "error: %s is larger than %zu bytes; rebuild with a larger limit\n", path, buffer_bytes);
        return -1;
    }
    return (long)length;
}

#endif
