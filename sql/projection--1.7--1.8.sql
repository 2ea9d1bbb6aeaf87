/* sql/projection--1.7--1.8.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION projection UPDATE TO '1.8'" to load this file. \quit

/*
 * Version 1.8.  Version 1.7 has shipped, so its script stays as it is; every
 * catalog or SQL change made after it goes here, one section per topic,
 * headed by a comment naming it.  The README's "Upgrading" section says what
 * changes for existing projections.
 */
