/*
 * gen prints where libmemcached, in weighted ketama mode, places keys:
 * one line per key, "key<TAB>host:port". Servers are the arguments; keys
 * are read one per line from stdin. Shoal's ketama selector is tested
 * against its output (see gen.sh).
 */
#include <libmemcached/memcached.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
	memcached_st *mc = memcached_create(NULL);
	if (mc == NULL) {
		fprintf(stderr, "memcached_create failed\n");
		return 1;
	}
	for (int i = 1; i < argc; i++) {
		char host[256];
		unsigned port = 11211;
		if (sscanf(argv[i], "%255[^:]:%u", host, &port) < 1) {
			fprintf(stderr, "bad server %s\n", argv[i]);
			return 1;
		}
		if (memcached_server_add(mc, host, (in_port_t)port) != MEMCACHED_SUCCESS) {
			fprintf(stderr, "cannot add %s\n", argv[i]);
			return 1;
		}
	}
	/* Weighted ketama: MD5 for keys and points, 160 points per server. */
	if (memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1) != MEMCACHED_SUCCESS) {
		fprintf(stderr, "cannot set ketama weighted\n");
		return 1;
	}
	char key[512];
	while (fgets(key, sizeof key, stdin) != NULL) {
		key[strcspn(key, "\n")] = '\0';
		memcached_return_t rc;
		const memcached_instance_st *server = memcached_server_by_key(mc, key, strlen(key), &rc);
		if (server == NULL) {
			fprintf(stderr, "no server for %s: %s\n", key, memcached_strerror(mc, rc));
			return 1;
		}
		printf("%s\t%s:%u\n", key, memcached_server_name(server), (unsigned)memcached_server_port(server));
	}
	memcached_free(mc);
	return 0;
}
