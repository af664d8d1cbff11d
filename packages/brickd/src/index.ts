/** brickd: the storage daemon. Built in the bricks issue; this package holds its place in the layout. */
export const BRICKD_PACKAGE = '@dunix/brickd';
