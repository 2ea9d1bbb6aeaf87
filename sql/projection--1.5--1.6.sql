/* sql/projection--1.5--1.6.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION projection UPDATE TO '1.6'" to load this file. \quit

/*
 * Version 1.6.  Version 1.5 has shipped, so its script stays as it is; every
 * catalog or SQL change made after it goes here, one section per topic,
 * headed by a comment naming it.  The README's "Upgrading" section says what
 * changes for existing projections.
 */
