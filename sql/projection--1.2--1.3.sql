/* sql/projection--1.2--1.3.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION projection UPDATE TO '1.3'" to load this file. \quit

/*
 * Version 1.3: operability, batch handlers and snapshots, feeds.  Each
 * section below says what it adds; the README's "Upgrading" section says
 * what changes for existing projections.
 */
