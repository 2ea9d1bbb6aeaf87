#!/bin/sh
# examples/search_indexer/sphinx.sh -- a private Sphinx (Debian's sphinxsearch)
# for the search indexer: an unprivileged searchd on a port of your choice,
# with one real-time index, "products", written over SphinxQL.
#
#     sphinx.sh start DIR PORT [INDEX...]
#                                 writes DIR/sphinx.conf, starts searchd with
#                                 the real-time indexes INDEX... (default:
#                                 products; a second one for a blue/green
#                                 re-index, e.g. products products_v2)
#     sphinx.sh stop DIR          stops it (and waits until it has exited)
#
# Everything (config, index files, binlog, logs, pid file) lives in DIR, so
# any user can run it; nothing of the system's sphinxsearch service is used.
set -eu

cmd=${1:?usage: sphinx.sh start DIR PORT [INDEX...] | stop DIR}
dir=${2:?usage: sphinx.sh start DIR PORT | stop DIR}

case "$cmd" in
start)
	port=${3:?usage: sphinx.sh start DIR PORT}
	mkdir -p "$dir/data" "$dir/binlog"
	dir=$(cd "$dir" && pwd)
	shift 3
	[ $# -gt 0 ] || set -- products
	: >"$dir/sphinx.conf"
	for index in "$@"; do
		cat >>"$dir/sphinx.conf" <<CONF
# the product search index: whole documents, one per product
index $index
{
	type			= rt
	path			= $dir/data/$index
	# full-text fields (indexed, not stored)
	rt_field		= name
	rt_field		= description
	rt_field		= category
	rt_field		= tags
	# attributes (stored)
	rt_attr_string	= product_id
	rt_attr_string	= category_name
	rt_attr_bigint	= price_cents
	# the global_position of the last event folded into the document: a
	# write never replaces a document by an older one
	rt_attr_bigint	= version
	# 1: the product was deleted (a tombstone, so that its version stays)
	rt_attr_uint	= deleted
	# the whole document, as JSON text (what the indexer checks and returns)
	rt_attr_string	= doc
	rt_mem_limit	= 64M
}

CONF
	done
	cat >>"$dir/sphinx.conf" <<CONF
searchd
{
	listen			= 127.0.0.1:$port:mysql41
	log				= $dir/searchd.log
	query_log		= $dir/query.log
	pid_file		= $dir/searchd.pid
	binlog_path		= $dir/binlog
	# flush and sync the binlog at every commit: an acknowledged write
	# survives a crash of searchd
	binlog_flush	= 1
	workers			= threads
}
CONF
	exec searchd --config "$dir/sphinx.conf"
	;;
stop)
	exec searchd --config "$dir/sphinx.conf" --stopwait
	;;
*)
	echo "usage: sphinx.sh start DIR PORT | stop DIR" >&2
	exit 2
	;;
esac
