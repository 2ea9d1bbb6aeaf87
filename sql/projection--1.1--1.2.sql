/* sql/projection--1.1--1.2.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION projection UPDATE TO '1.2'" to load this file. \quit

/*
 * Version 1.2: correctness and privileges (see the README's "Upgrading"
 * section for what changes for existing projections).
 */
